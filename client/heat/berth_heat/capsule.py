#
#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""OS::Berth::Capsule: a pod on Berth, managed by Heat.

A Heat resource plugin (load it with heat-engine's ``plugin_dirs``; see
docs/HEAT.md). It talks to Berth's ``/v1/capsules`` through the catalog's
``container`` endpoint with the request context's Keystone session, the same
way Heat's own OS::Zun::Container reaches Zun:

* create: ``POST /v1/capsules {"template": ...}``; complete when the pod is
  Running (every app container of the spec running, with the same start, for
  a few seconds, so a crash-looping container does not pass) or has run to
  completion (phase Succeeded); failed with Berth's ``status_reason`` when the
  capsule goes to Error or stops.
* update: ``PATCH /v1/capsules/{id} {"template": ...}``: Berth restarts only
  the containers whose spec changed; complete when the new generation runs,
  failed with Berth's reason when the agent rolled the update back.
* delete: ``DELETE /v1/capsules/{id}``; complete when ``GET`` answers 404.
"""

import json
import re
import time

from oslo_log import log as logging
import yaml

from heat.common import exception
from heat.common.i18n import _
from heat.engine import attributes
from heat.engine import properties
from heat.engine import resource
from heat.engine import support

LOG = logging.getLogger(__name__)

# Berth's capsule view with pod_status and rollback (Zun's newest microversion).
API_VERSION = 'container 1.40'
# How long every app container must keep running (same start) before Running
# counts, as `osc capsule-create --wait` does.
STEADY_SECONDS = 3.0
# Waiting reasons of a container that cannot get going: Berth (like kubelet)
# keeps retrying them, but a stack must not wait for them until its timeout.
START_FAILURES = ('ErrImagePull', 'ImagePullBackOff', 'InvalidImageName',
                  'CreateContainerError', 'CreateContainerConfigError',
                  'RunContainerError', 'CrashLoopBackOff')
ROLLBACK_WINDOW_ANNOTATION = 'berth.io/rollback-window-seconds'


class BerthError(exception.Error):
    """Berth refused a request; the message is Berth's own error detail."""


def _detail(resp):
    """The error detail of a Berth (Zun-format) error response."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or '').strip() or resp.reason
    errors = body.get('errors') if isinstance(body, dict) else None
    if errors and isinstance(errors, list) and isinstance(errors[0], dict):
        e = errors[0]
        return e.get('detail') or e.get('title') or json.dumps(e)
    return json.dumps(body)


def _format_of(template):
    """'capsule', 'manifest' (Google v1beta1/v1beta2) or 'pod' (Kubernetes v1)."""
    if template.get('version') in ('v1beta1', 'v1beta2'):
        return 'manifest'
    if str(template.get('kind', '')).lower() == 'capsule':
        return 'capsule'
    return 'pod'


def _dns_label(text):
    label = re.sub(r'[^a-z0-9-]+', '-', text.lower()).strip('-')
    return label[:63].strip('-') or 'capsule'


class BerthCapsule(resource.Resource):
    """A Berth capsule (pod): containers that run together on one instance.

    The template is any of the formats Berth's pods accept: a Zun capsule
    template (``kind: capsule``), a Google container manifest (``version:
    v1beta1`` or ``v1beta2``) or a Kubernetes v1 Pod (``apiVersion: v1``,
    ``kind: Pod``), as a map or as a JSON/YAML string. A stack-update with a
    changed template updates the pod in place: only changed containers
    restart, and an update that crash-loops is rolled back by Berth and fails
    the resource with Berth's reason.
    """

    support_status = support.SupportStatus(version='27.0.0')

    # Availability and the Keystone session come from Heat's zun client plugin:
    # the resource type is available when the catalog has a `container` endpoint.
    default_client_name = 'zun'

    PROPERTIES = (TEMPLATE, NAME) = ('template', 'name')

    ATTRIBUTES = (
        STATUS, STATUS_REASON, ADDRESSES, CONTAINERS, POD_STATUS,
    ) = (
        'status', 'status_reason', 'addresses', 'containers', 'pod_status',
    )

    properties_schema = {
        TEMPLATE: properties.Schema(
            properties.Schema.ANY,
            _('The pod template: a Zun capsule template, a Google container '
              'manifest (v1beta1/v1beta2) or a Kubernetes v1 Pod, as a map '
              'or a JSON/YAML string.'),
            required=True,
            update_allowed=True,
        ),
        NAME: properties.Schema(
            properties.Schema.STRING,
            _('Name of the capsule; overrides the name in the template. '
              'Default: the template\'s, else one made from the stack and '
              'resource names. A new name replaces the capsule.'),
            update_allowed=True,
        ),
    }

    attributes_schema = {
        STATUS: attributes.Schema(
            _('Zun status of the capsule: Creating, Running, Stopped, Error.'),
            type=attributes.Schema.STRING,
        ),
        STATUS_REASON: attributes.Schema(
            _('Why the capsule is in its status (set on Error).'),
            type=attributes.Schema.STRING,
        ),
        ADDRESSES: attributes.Schema(
            _('The addresses of the capsule, keyed by network.'),
            type=attributes.Schema.MAP,
        ),
        CONTAINERS: attributes.Schema(
            _('Per container: name, image, status, status_reason, state, '
              'last_state, restart_count, ready.'),
            type=attributes.Schema.LIST,
        ),
        POD_STATUS: attributes.Schema(
            _('The pod status as the agent reports it (phase, conditions, '
              'container statuses, generation, rollback, message).'),
            type=attributes.Schema.MAP,
        ),
    }

    # --- the template ---------------------------------------------------

    def _template(self, props):
        raw = props[self.TEMPLATE]
        if isinstance(raw, str):
            try:
                tpl = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise exception.StackValidationFailed(
                    message=_('template: not valid JSON or YAML: %s') % e)
        else:
            tpl = raw
        if not isinstance(tpl, dict):
            raise exception.StackValidationFailed(
                message=_('template: must be a map (or a JSON/YAML string '
                          'of one): a Zun capsule template, a Google '
                          'container manifest or a Kubernetes v1 Pod'))
        tpl = json.loads(json.dumps(tpl))  # a plain, private copy
        name = props[self.NAME]
        fmt = _format_of(tpl)
        if fmt == 'manifest':
            if name or not tpl.get('id'):
                tpl['id'] = name or self._default_name()
        else:
            meta = tpl.get('metadata')
            if not isinstance(meta, dict):
                meta = tpl['metadata'] = {}
            if name or not meta.get('name'):
                meta['name'] = name or self._default_name()
        return tpl

    @staticmethod
    def _name_of(template):
        if _format_of(template) == 'manifest':
            return template.get('id')
        return (template.get('metadata') or {}).get('name')

    def _default_name(self):
        return _dns_label(self.physical_resource_name())

    def validate(self):
        super(BerthCapsule, self).validate()
        raw = self.properties[self.TEMPLATE]
        if raw is not None and not isinstance(raw, (str, dict)):
            raise exception.StackValidationFailed(
                message=_('template: must be a map or a JSON/YAML string'))

    # --- HTTP to Berth ----------------------------------------------------

    def _request(self, method, path, body=None):
        plugin = self.client_plugin()
        endpoint_filter = {
            'service_type': 'container',
            'interface': plugin._get_client_option('zun', 'endpoint_type'),
            'region_name': plugin._get_region_name(),
        }
        kwargs = {
            'endpoint_filter': endpoint_filter,
            'headers': {'OpenStack-API-Version': API_VERSION,
                        'Accept': 'application/json'},
            'raise_exc': False,
        }
        if body is not None:
            kwargs['json'] = body
        return self.context.keystone_session.request(path, method, **kwargs)

    def _get(self):
        """The capsule view, or None when Berth answers 404."""
        resp = self._request('GET', '/capsules/%s' % self.resource_id)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise BerthError(_('Berth answered %(code)s to GET capsule '
                               '%(id)s: %(detail)s') % {
                'code': resp.status_code, 'id': self.resource_id,
                'detail': _detail(resp)})
        return resp.json()

    # --- completion ---------------------------------------------------------

    @staticmethod
    def _reason(view):
        reason = view.get('status_reason')
        if not reason:
            reason = (view.get('pod_status') or {}).get('message')
        return reason or 'no reason given'

    @staticmethod
    def _running_signature(view):
        statuses = (view.get('pod_status') or {}).get('container_statuses')
        if not statuses:
            return None
        sig = []
        for c in statuses:
            running = ((c.get('state') or {}).get('running') or {})
            if not running.get('started_at'):
                return None
            sig.append('%s@%s' % (c.get('name'), running['started_at']))
        return sig

    @staticmethod
    def _start_failure(pod):
        """The reason of the first container stuck in one of START_FAILURES."""
        for c in ((pod.get('init_container_statuses') or []) +
                  (pod.get('container_statuses') or [])):
            waiting = (c.get('state') or {}).get('waiting') or {}
            if waiting.get('reason') in START_FAILURES:
                return waiting['reason']
        return None

    def _check(self, cookie):
        """One poll: True when done; raises ResourceInError on failure."""
        view = self._get()
        if view is None:
            raise exception.ResourceInError(
                status_reason=_('the capsule is gone from Berth'),
                resource_status='Deleted')
        status = view.get('status') or ''
        pod = view.get('pod_status') or {}
        generation = cookie.get('generation')
        rollback = pod.get('rollback') or view.get('rollback')
        if (generation is not None and rollback and
                rollback.get('failed_generation') == generation):
            raise exception.ResourceInError(
                status_reason=_('the update was rolled back: %s') % (
                    rollback.get('reason') or 'no reason given'),
                resource_status='RolledBack')
        reported = pod.get('generation')
        at_generation = (generation is None or
                         (reported is not None and reported >= generation))
        lower = status.lower()
        if lower == 'error':
            raise exception.ResourceInError(
                status_reason=self._reason(view), resource_status=status)
        if lower in ('deleting', 'deleted'):
            raise exception.ResourceInError(
                status_reason=_('the capsule went to %s') % status,
                resource_status=status)
        # On create, and on an update Berth will not roll back, a container
        # that cannot start fails the resource at once; on other updates the
        # agent's rollback (above) gives the reason.
        stuck = self._start_failure(pod)
        if (at_generation and stuck and
                (generation is None or not cookie.get('rollback', True))):
            raise exception.ResourceInError(
                status_reason=self._reason(view), resource_status=stuck)
        if lower == 'stopped' and at_generation:
            if pod.get('phase') == 'Succeeded':
                return True
            raise exception.ResourceInError(
                status_reason=_('the capsule stopped (%(phase)s): '
                                '%(reason)s') % {
                    'phase': pod.get('phase') or 'Unknown',
                    'reason': self._reason(view)},
                resource_status=status)
        if lower == 'running' and at_generation:
            sig = self._running_signature(view)
            now = time.monotonic()
            if sig is None:
                cookie.pop('signature', None)
                return False
            if cookie.get('signature') != sig:
                cookie['signature'] = sig
                cookie['since'] = now
                return False
            return now - cookie['since'] >= STEADY_SECONDS
        cookie.pop('signature', None)
        return False

    # --- create -------------------------------------------------------------

    def handle_create(self):
        template = self._template(self.properties)
        resp = self._request('POST', '/capsules', {'template': template})
        if resp.status_code >= 400:
            raise BerthError(_('Berth refused the capsule (%(code)s): '
                               '%(detail)s') % {'code': resp.status_code,
                                                'detail': _detail(resp)})
        view = resp.json()
        self.resource_id_set(view['uuid'])
        LOG.info('capsule %s created on Berth', view['uuid'])
        return {'generation': None}

    def check_create_complete(self, cookie):
        return self._check(cookie)

    # --- update -------------------------------------------------------------

    def needs_replace_failed(self):
        """After a failed create or update, replace only a capsule that is
        gone or in Error: one whose update Berth rolled back still runs the
        previous spec and is updated in place."""
        if not self.resource_id:
            return True
        try:
            view = self._get()
        except BerthError:
            return True
        return view is None or (view.get('status') or '').lower() in (
            'error', 'deleting', 'deleted')

    def handle_update(self, json_snippet, tmpl_diff, prop_diff):
        if not prop_diff:
            return None
        after = json_snippet.properties(self.properties_schema, self.context)
        template = self._template(after)
        # The name is a capsule's identity (Berth's update keeps it): a new
        # name is a new capsule, made before the old one is deleted.
        if self._name_of(template) != self._name_of(
                self._template(self.properties)):
            raise resource.UpdateReplace(self)
        resp = self._request('PATCH', '/capsules/%s' % self.resource_id,
                             {'template': template})
        if resp.status_code >= 400:
            raise BerthError(_('Berth refused the update (%(code)s): '
                               '%(detail)s') % {'code': resp.status_code,
                                                'detail': _detail(resp)})
        view = resp.json()
        annotations = view.get('annotations') or {}
        rollback = str(annotations.get(ROLLBACK_WINDOW_ANNOTATION, '60')) != '0'
        return {'generation': view.get('generation'), 'rollback': rollback}

    def check_update_complete(self, cookie):
        if cookie is None:
            return True
        return self._check(cookie)

    # --- delete -------------------------------------------------------------

    def handle_delete(self):
        if not self.resource_id:
            return None
        resp = self._request('DELETE', '/capsules/%s' % self.resource_id)
        if resp.status_code == 404:
            return None
        if resp.status_code >= 400:
            raise BerthError(_('Berth refused to delete capsule %(id)s '
                               '(%(code)s): %(detail)s') % {
                'id': self.resource_id, 'code': resp.status_code,
                'detail': _detail(resp)})
        return self.resource_id

    def check_delete_complete(self, capsule_id):
        if not capsule_id:
            return True
        return self._get() is None

    # --- attributes ---------------------------------------------------------

    def _show_resource(self):
        if not self.resource_id:
            return {}
        return self._get() or {}

    def _resolve_attribute(self, name):
        if not self.resource_id:
            return None
        view = self._get()
        if view is None:
            return None
        if name == self.CONTAINERS:
            keep = ('name', 'image', 'status', 'status_reason', 'state',
                    'last_state', 'restart_count', 'ready')
            return [dict((k, c.get(k)) for k in keep)
                    for c in view.get('containers') or []]
        return view.get(name)


def resource_mapping():
    return {'OS::Berth::Capsule': BerthCapsule}
