//! Policy: who may do what, by Zun's policy names (`container:start`, `quota:update`, …).
//!
//! The defaults are Zun's, extended with Keystone's reader and member personas: a
//! reader may list, show and read logs and actions of its own project's resources; a
//! member may do everything to its own project's resources; an admin may also reach
//! every project (`all_projects`), hosts, other projects' quotas, and force delete.
//!
//! A policy file (YAML or JSON, a map of name → rule string, like oslo.policy's
//! `policy.yaml`) overrides individual rules. Every name in it must be a known action
//! or a base rule (a name without `:`, such as `admin_or_owner`, which rules refer to
//! with `rule:NAME`); anything else, a syntax error, a reference to an undefined rule
//! or a cycle of references fails start-up.
//!
//! Policy is checked before the resource is looked up, against the caller's own
//! project: lookups are project-scoped, so another project's resource is "not found"
//! (404) whatever the policy says, and a denial (403) never depends on whether a
//! resource exists.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::api::error::ApiError;
use crate::identity::RequestContext;
pub use rules::{Match, Rule, SyntaxError};

/// Base rules the action defaults are written in.
const BASE_RULES: &[(&str, &str)] = &[
    ("context_is_admin", "role:admin"),
    ("admin_api", "rule:context_is_admin"),
    (
        "project_member",
        "role:member and project_id:%(project_id)s",
    ),
    (
        "project_reader",
        "(role:reader or role:member) and project_id:%(project_id)s",
    ),
    // Zun's name; with the reader persona an owner is a member of the project.
    (
        "admin_or_owner",
        "rule:context_is_admin or rule:project_member",
    ),
    (
        "admin_or_reader",
        "rule:context_is_admin or rule:project_reader",
    ),
    ("deny_everybody", "!"),
];

/// Reads: a reader of the project may do them.
const READ: &str = "rule:admin_or_reader";
/// Changes to the project's own resources: a member may do them.
const OWN: &str = "rule:admin_or_owner";
/// Cloud-wide or other projects': admins only.
const ADMIN: &str = "rule:admin_api";

/// Every action Berth knows, with its default rule (Zun's names and defaults, readers
/// added). Actions Berth does not serve yet are listed so that a policy file written
/// for Zun loads.
const ACTIONS: &[(&str, &str)] = &[
    ("container:create", OWN),
    ("container:create:runtime", ADMIN),
    ("container:create:privileged", "rule:deny_everybody"),
    // Berth: host access a tenant's container may be granted (Docker endpoint options;
    // nobody by default, like privileged).
    ("container:create:host_network", "rule:deny_everybody"),
    ("container:create:host_namespaces", "rule:deny_everybody"),
    ("container:create:host_mounts", "rule:deny_everybody"),
    ("container:create:devices", "rule:deny_everybody"),
    ("container:create:capabilities", "rule:deny_everybody"),
    ("container:create:unconfined", "rule:deny_everybody"),
    ("container:create:requested_destination", ADMIN),
    ("container:create:image_pull_policy", ADMIN),
    ("container:delete", OWN),
    ("container:delete_all_projects", ADMIN),
    ("container:delete_force", ADMIN),
    ("container:get_one", READ),
    ("container:get_one:host", ADMIN),
    ("container:get_one:image_pull_policy", ADMIN),
    ("container:get_one:privileged", ADMIN),
    ("container:get_one:runtime", ADMIN),
    ("container:get_one_all_projects", ADMIN),
    ("container:get_all", READ),
    ("container:get_all_all_projects", ADMIN),
    ("container:update", OWN),
    ("container:start", OWN),
    ("container:stop", OWN),
    ("container:reboot", OWN),
    ("container:pause", OWN),
    ("container:unpause", OWN),
    ("container:kill", OWN),
    ("container:logs", READ),
    ("container:stats", READ),
    ("container:top", READ),
    ("container:execute", OWN),
    ("container:execute_resize", OWN),
    ("container:attach", OWN),
    ("container:resize", OWN),
    ("container:resize_container", OWN),
    ("container:get_archive", OWN),
    ("container:put_archive", OWN),
    ("container:commit", OWN),
    ("container:rename", OWN),
    ("container:rebuild", OWN),
    ("container:network_attach", OWN),
    ("container:network_detach", OWN),
    ("container:add_security_group", OWN),
    ("container:remove_security_group", OWN),
    ("container:actions", READ),
    ("container:action:events", ADMIN),
    ("capsule:create", OWN),
    ("capsule:delete", OWN),
    ("capsule:delete_all_projects", ADMIN),
    ("capsule:get", READ),
    ("capsule:get:host", ADMIN),
    ("capsule:get_one_all_projects", ADMIN),
    ("capsule:get_all", READ),
    ("capsule:get_all_all_projects", ADMIN),
    // Berth: PATCH /v1/capsules/{id} with a new template.
    ("capsule:update", OWN),
    ("host:get_all", ADMIN),
    ("host:get", ADMIN),
    ("image:pull", ADMIN),
    ("image:get_all", ADMIN),
    ("image:get_one", ADMIN),
    ("image:delete", ADMIN),
    ("image:search", READ),
    ("quota:get", READ),
    ("quota:get_default", READ),
    ("quota:update", ADMIN),
    ("quota:delete", ADMIN),
    ("quota_class:get", ADMIN),
    ("quota_class:update", ADMIN),
    ("registry:create", OWN),
    ("registry:get_one", READ),
    ("registry:get_all", READ),
    ("registry:get_all_all_projects", ADMIN),
    ("registry:update", OWN),
    ("registry:delete", OWN),
    ("availability_zones:get_all", READ),
    ("zun-service:get_all", ADMIN),
    ("zun-service:delete", ADMIN),
    ("zun-service:enable", ADMIN),
    ("zun-service:disable", ADMIN),
    ("zun-service:force_down", ADMIN),
    // Berth's Docker endpoint: a member registers client certificates for their own
    // user in their project and may revoke the project's; readers may list them.
    ("docker:credentials:create", OWN),
    ("docker:credentials:get_all", READ),
    ("docker:credentials:delete", OWN),
    ("network:create", "role:admin"),
    ("network:delete", "role:admin"),
    ("network:attach_external_network", "role:admin"),
];

/// Why a policy could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read the policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not a YAML/JSON map of strings.
    #[error(
        "the policy file {path} is not a YAML or JSON map of rule name to rule string: {message}"
    )]
    Format { path: String, message: String },
    /// A rule name nobody knows.
    #[error("the policy file {path} names an unknown action '{name}'; known actions are Zun's (e.g. container:start, quota:update); check the spelling")]
    UnknownName { path: String, name: String },
    /// A rule string that does not parse.
    #[error("policy rule '{name}' = \"{rule}\" is invalid: {error}")]
    Syntax {
        name: String,
        rule: String,
        error: SyntaxError,
    },
    /// `rule:X` where X is defined nowhere.
    #[error("policy rule '{name}' refers to rule:{missing}, which is not defined; define it in the policy file or use one of the base rules ({known})")]
    UndefinedRef {
        name: String,
        missing: String,
        known: String,
    },
    /// Rules that refer to each other in a circle.
    #[error(
        "policy rule '{name}' refers back to itself through rule: references; break the cycle"
    )]
    Cycle { name: String },
}

/// What an action is performed on.
#[derive(Debug, Clone)]
pub struct Target {
    /// The project that owns the resource.
    pub project_id: String,
    /// The user that owns the resource, where one does.
    pub user_id: Option<String>,
}

impl Target {
    /// A resource of `project`.
    pub fn project(project: &str) -> Target {
        Target {
            project_id: project.to_owned(),
            user_id: None,
        }
    }

    /// A resource of the caller's own project: what every project-scoped route acts on
    /// (another project's resource is never found there).
    pub fn own(ctx: &RequestContext) -> Target {
        Target::project(&ctx.project_id)
    }
}

/// A refusal: the caller may not perform the action.
#[derive(Debug, Clone, thiserror::Error)]
#[error("Policy doesn't allow {action} to be performed. {hint}")]
pub struct Denied {
    /// The action's policy name.
    pub action: String,
    hint: String,
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError::Forbidden(d.to_string())
    }
}

/// The loaded policy: every action's rule, overrides applied, references checked.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Rule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::with_overrides(BTreeMap::new(), "(defaults)").expect("the defaults are valid")
    }
}

impl Policy {
    /// The defaults, overridden by `file` when given.
    pub fn load(file: Option<&Path>) -> Result<Policy, PolicyError> {
        let Some(path) = file else {
            return Ok(Policy::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::from_text(&text, &shown)
    }

    /// The defaults, overridden by a YAML or JSON document (`origin` names it in errors).
    pub fn from_text(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        // An empty file (or one of comments only) overrides nothing.
        let map: Option<BTreeMap<String, String>> =
            serde_yaml::from_str(text).map_err(|e| PolicyError::Format {
                path: origin.to_owned(),
                message: e.to_string(),
            })?;
        Policy::with_overrides(map.unwrap_or_default(), origin)
    }

    fn with_overrides(
        overrides: BTreeMap<String, String>,
        origin: &str,
    ) -> Result<Policy, PolicyError> {
        let mut raw: BTreeMap<String, String> = BASE_RULES
            .iter()
            .chain(ACTIONS)
            .map(|(n, r)| ((*n).to_owned(), (*r).to_owned()))
            .collect();
        for (name, rule) in overrides {
            // Base rules (no ':') may be added freely, as oslo.policy allows; an action
            // name must be one Berth knows, so that a typo cannot silently do nothing.
            if name.contains(':') && !raw.contains_key(&name) {
                return Err(PolicyError::UnknownName {
                    path: origin.to_owned(),
                    name,
                });
            }
            raw.insert(name, rule);
        }
        let mut rules = BTreeMap::new();
        for (name, text) in raw {
            let rule = Rule::parse(&text).map_err(|error| PolicyError::Syntax {
                name: name.clone(),
                rule: text.clone(),
                error,
            })?;
            rules.insert(name, rule);
        }
        let policy = Policy { rules };
        policy.check_refs()?;
        Ok(policy)
    }

    fn check_refs(&self) -> Result<(), PolicyError> {
        let base: Vec<&str> = self
            .rules
            .keys()
            .filter(|k| !k.contains(':'))
            .map(String::as_str)
            .collect();
        for (name, rule) in &self.rules {
            for r in rule.refs() {
                if !self.rules.contains_key(r) {
                    return Err(PolicyError::UndefinedRef {
                        name: name.clone(),
                        missing: r.to_owned(),
                        known: base.join(", "),
                    });
                }
            }
        }
        // Depth-first search for a cycle from every rule.
        fn visit<'a>(
            p: &'a Policy,
            name: &'a str,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) -> Result<(), PolicyError> {
            if done.contains(name) {
                return Ok(());
            }
            if path.contains(&name) {
                return Err(PolicyError::Cycle {
                    name: name.to_owned(),
                });
            }
            path.push(name);
            for r in p.rules[name].refs() {
                visit(p, r, path, done)?;
            }
            path.pop();
            done.insert(name);
            Ok(())
        }
        let mut done = BTreeSet::new();
        for name in self.rules.keys() {
            visit(self, name, &mut Vec::new(), &mut done)?;
        }
        Ok(())
    }

    /// The rule of `action`, as loaded.
    pub fn rule(&self, action: &str) -> Option<&Rule> {
        self.rules.get(action)
    }

    /// Whether `ctx` may perform `action` on `target`. An unknown action is refused.
    pub fn allows(&self, action: &str, ctx: &RequestContext, target: &Target) -> bool {
        self.rules
            .get(action)
            .is_some_and(|r| self.eval(r, ctx, target))
    }

    /// Refuses with Zun's message (and a hint of the roles that would do) unless `ctx`
    /// may perform `action` on `target`.
    pub fn enforce(
        &self,
        action: &str,
        ctx: &RequestContext,
        target: &Target,
    ) -> Result<(), Denied> {
        if self.allows(action, ctx, target) {
            return Ok(());
        }
        tracing::info!(
            policy.action = action,
            user.id = %ctx.user_id,
            project.id = %ctx.project_id,
            target.project_id = %target.project_id,
            "policy denied"
        );
        Err(Denied {
            action: action.to_owned(),
            hint: self.hint(action, ctx, target),
        })
    }

    fn eval(&self, rule: &Rule, ctx: &RequestContext, target: &Target) -> bool {
        match rule {
            Rule::Always => true,
            Rule::Never => false,
            Rule::Role(r) => ctx.roles.iter().any(|have| have.eq_ignore_ascii_case(r)),
            // References were checked at load, and cycles refused.
            Rule::Ref(name) => self
                .rules
                .get(name)
                .is_some_and(|r| self.eval(r, ctx, target)),
            Rule::IsAdmin(want) => ctx.is_admin() == *want,
            Rule::Project(Match::Target) => ctx.project_id == target.project_id,
            Rule::Project(Match::Literal(p)) => &ctx.project_id == p,
            Rule::User(Match::Target) => target.user_id.as_deref() == Some(ctx.user_id.as_str()),
            Rule::User(Match::Literal(u)) => &ctx.user_id == u,
            Rule::Not(r) => !self.eval(r, ctx, target),
            Rule::And(rs) => rs.iter().all(|r| self.eval(r, ctx, target)),
            Rule::Or(rs) => rs.iter().any(|r| self.eval(r, ctx, target)),
        }
    }

    /// The roles that appear (not negated) in the action's rule, references followed.
    pub fn roles_named(&self, action: &str) -> Vec<String> {
        fn collect(p: &Policy, r: &Rule, negated: bool, out: &mut Vec<String>) {
            match r {
                Rule::Role(name) if !negated && !out.contains(name) => out.push(name.clone()),
                Rule::IsAdmin(true) if !negated && !out.iter().any(|o| o == "admin") => {
                    out.push("admin".into())
                }
                Rule::Ref(n) => {
                    if let Some(inner) = p.rules.get(n) {
                        collect(p, inner, negated, out);
                    }
                }
                Rule::Not(inner) => collect(p, inner, !negated, out),
                Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|x| collect(p, x, negated, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        if let Some(r) = self.rules.get(action) {
            collect(self, r, false, &mut out);
        }
        out
    }

    fn hint(&self, action: &str, ctx: &RequestContext, target: &Target) -> String {
        let Some(rule) = self.rules.get(action) else {
            return "No such action is known.".into();
        };
        let mut roles = self.roles_named(action);
        // The broadest role last: "member or admin".
        roles.sort_by_key(|r| r == "admin");
        let yours = if ctx.roles.is_empty() {
            "none".to_owned()
        } else {
            ctx.roles.join(", ")
        };
        if roles.is_empty() {
            return format!("The policy rule \"{rule}\" allows no role to do this.");
        }
        let place = if target.project_id == ctx.project_id {
            "in your project".to_owned()
        } else {
            format!("in project {} (or the admin role)", target.project_id)
        };
        format!(
            "It needs the role {} {place}; your roles are: {yours}. Ask an admin for the role (openstack role add).",
            roles.join(" or ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(project: &str, roles: &[&str]) -> RequestContext {
        RequestContext {
            user_id: "u1".into(),
            user_name: "u".into(),
            project_id: project.into(),
            project_name: project.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn reader_reads_member_changes_admin_reaches_everything() {
        let p = Policy::default();
        let own = Target::project("p1");
        let reader = ctx("p1", &["reader"]);
        let member = ctx("p1", &["member"]);
        let admin = ctx("adm", &["admin"]);
        for a in [
            "container:get_one",
            "container:get_all",
            "container:logs",
            "container:actions",
            "quota:get",
        ] {
            assert!(p.allows(a, &reader, &own), "reader {a}");
            assert!(p.allows(a, &member, &own), "member {a}");
        }
        for a in [
            "container:create",
            "container:start",
            "container:delete",
            "container:update",
            "container:kill",
        ] {
            assert!(!p.allows(a, &reader, &own), "reader {a}");
            assert!(p.allows(a, &member, &own), "member {a}");
            assert!(p.allows(a, &admin, &Target::own(&admin)), "admin {a}");
        }
        for a in [
            "container:delete_force",
            "container:get_all_all_projects",
            "quota:update",
            "quota_class:get",
            "host:get_all",
        ] {
            assert!(!p.allows(a, &member, &own), "member {a}");
            assert!(p.allows(a, &admin, &own), "admin {a}");
        }
        // Another project's quotas: not for a member of this one.
        assert!(!p.allows("quota:get", &member, &Target::project("p2")));
        assert!(p.allows("quota:get", &admin, &Target::project("p2")));
        assert!(!p.allows("container:create:privileged", &admin, &own));
        for a in [
            "container:create:host_network",
            "container:create:host_namespaces",
            "container:create:host_mounts",
            "container:create:devices",
            "container:create:capabilities",
            "container:create:unconfined",
        ] {
            assert!(!p.allows(a, &admin, &own), "admin {a}");
        }
        assert!(!p.allows("no:such:action", &admin, &own));
    }

    #[test]
    fn a_denial_names_the_action_and_the_roles_that_would_do() {
        let p = Policy::default();
        let reader = ctx("p1", &["reader"]);
        let e = p
            .enforce("container:start", &reader, &Target::own(&reader))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("Policy doesn't allow container:start to be performed."),
            "{msg}"
        );
        assert!(msg.contains("member or admin"), "{msg}");
        assert!(msg.contains("your roles are: reader"), "{msg}");
    }

    #[test]
    fn a_file_overrides_one_rule_and_keeps_the_others() {
        let p = Policy::from_text(
            "# readers may stop\n\"container:stop\": \"rule:admin_or_reader\"\n",
            "t",
        )
        .unwrap();
        let reader = ctx("p1", &["reader"]);
        assert!(p.allows("container:stop", &reader, &Target::own(&reader)));
        assert!(!p.allows("container:start", &reader, &Target::own(&reader)));
        let json = Policy::from_text(
            r#"{"container:get_all": "role:admin", "my_rule": "role:x"}"#,
            "t",
        )
        .unwrap();
        assert!(!json.allows("container:get_all", &reader, &Target::own(&reader)));
        assert!(Policy::from_text("", "t").is_ok());
    }

    #[test]
    fn bad_files_fail_with_a_clear_message() {
        let cases = [
            (
                "\"container:strat\": \"role:member\"",
                "unknown action 'container:strat'",
            ),
            ("\"container:start\": \"role:member or\"", "container:start"),
            (
                "\"container:start\": \"rule:nope\"",
                "rule:nope, which is not defined",
            ),
            (
                "\"a\": \"rule:b\"\n\"b\": \"rule:a\"",
                "refers back to itself",
            ),
            ("- just a list", "not a YAML or JSON map"),
        ];
        for (text, says) in cases {
            let e = Policy::from_text(text, "policy.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
