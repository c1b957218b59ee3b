//! Attach, exec, logs and resize: byte streams between the docker CLI and a process in
//! a container, carried service → relay → agent ([`crate::agents::Agents::open_stream`]).
//!
//! Attach and exec start hijack the HTTP connection: everything is checked first (the
//! CLI shows only the status code of a failed hijack), the agent stream is opened, then
//! the answer is `101 UPGRADED` and a task pumps bytes both ways. Without a TTY the
//! output is multiplexed as moby's stdcopy frames; with one it is passed raw. The
//! client's bytes are always raw stdin; its half-close closes the process's stdin while
//! output keeps flowing until the process ends.
//!
//! Exec instances live in the [`ExecTable`] from create until some minutes after they
//! end, so `docker exec` can read the exit code right after the stream closes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_proto::{AgentError, AgentErrorKind, Channel, Command, ExecSpec, StreamEnd, StreamOpen};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{empty, ids, json, ApiVersion, Body, Call, Cx, DockerError, Response};
use crate::agents::{AgentStream, StreamEvent, StreamInput, StreamOutput};
use crate::db::models::ContainerRow;

/// Content type of a raw (TTY) stream.
const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
/// Content type of a multiplexed (stdcopy) stream, from API 1.42 on.
const MULTIPLEXED_STREAM: &str = "application/vnd.docker.multiplexed-stream";

/// Docker's stream ids in a multiplexed stream.
const STREAM_STDOUT: u8 = 1;
const STREAM_STDERR: u8 = 2;
const STREAM_SYSTEMERR: u8 = 3;

/// Frames a streamed response body may have queued before the writer waits for the
/// client to read.
const BODY_QUEUE: usize = 16;

/// Bytes read from a hijacked client at a time.
const READ_CHUNK: usize = 32 * 1024;

/// The content type of an attach, exec or logs stream.
fn stream_content_type(version: ApiVersion, tty: bool) -> &'static str {
    if tty || version < ApiVersion(1, 42) {
        RAW_STREAM
    } else {
        MULTIPLEXED_STREAM
    }
}

/// One stdcopy frame: `[stream, 0, 0, 0, len (u32, big-endian)]` then the payload.
fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("stream chunks are far below 4 GiB");
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The bytes the client gets for one chunk of the agent's output: raw with a TTY, a
/// frame without. Nothing for channels the client does not read.
fn encode_output(channel: Channel, data: &[u8], tty: bool) -> Option<Vec<u8>> {
    let stream = match channel {
        Channel::Stdout => STREAM_STDOUT,
        Channel::Stderr => STREAM_STDERR,
        Channel::Stdin | Channel::Progress => return None,
    };
    if data.is_empty() {
        return None;
    }
    Some(if tty {
        data.to_vec()
    } else {
        frame(stream, data)
    })
}

/// The bytes that tell the client the stream failed: a systemerr frame (the CLI prints
/// "error from daemon in stream: …"), or a line of text on a raw stream.
fn encode_failure(message: &str, tty: bool) -> Vec<u8> {
    if tty {
        format!("\r\nError from Berth: {message}\r\n").into_bytes()
    } else {
        frame(STREAM_SYSTEMERR, message.as_bytes())
    }
}

/// The client-visible bytes of one agent event, and the end when it is the last.
fn render_event(event: StreamEvent, tty: bool) -> (Option<Vec<u8>>, Option<StreamEnd>) {
    match event {
        StreamEvent::Data(d) => (encode_output(d.channel, &d.data, tty), None),
        StreamEvent::End(end) => {
            let bytes = match &end {
                StreamEnd::Failed { error } => Some(encode_failure(&error.message, tty)),
                StreamEnd::Exited { .. } | StreamEnd::Finished => None,
            };
            (bytes, Some(end))
        }
    }
}

/// An agent error as the Docker client should see it.
pub(super) fn agent_error(e: AgentError) -> DockerError {
    let status = match e.kind {
        AgentErrorKind::NotFound | AgentErrorKind::ImageNotFound => StatusCode::NOT_FOUND,
        AgentErrorKind::Conflict => StatusCode::CONFLICT,
        AgentErrorKind::Runtime => StatusCode::INTERNAL_SERVER_ERROR,
        AgentErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    DockerError::new(status, e.message)
}

/// The instance the container is placed on.
fn instance_of(row: &ContainerRow) -> Result<Uuid, DockerError> {
    row.instance_id
        .as_deref()
        .and_then(|i| Uuid::try_parse(i).ok())
        .ok_or_else(|| {
            DockerError::conflict(format!(
                "container {} is not placed on an instance yet; wait until it is created",
                ids::docker_id(&row.id)
            ))
        })
}

fn container_uuid(row: &ContainerRow) -> Result<Uuid, DockerError> {
    Uuid::try_parse(&row.id).map_err(|_| {
        DockerError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("container {} has a malformed id in the database", row.id),
        )
    })
}

/// A response body fed from a channel: each message is sent to the client as it comes
/// (hyper writes it chunked), and the body ends when every sender is gone. When the
/// client goes away the receiver is dropped and the sender's next send fails.
pub(super) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed body and the sender that feeds it.
pub(super) fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    (tx, ChannelBody { rx }.boxed())
}

/// A 200 whose body is streamed, with this content type.
pub(super) fn streaming_response(content_type: &'static str, body: Body) -> Response {
    let mut resp = hyper::Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Sends the agent's output to a streamed body until the stream ends or the client
/// goes away; returns how it ended (`None`: the client went away first).
async fn output_to_body(
    output: &mut StreamOutput,
    tx: &mpsc::Sender<Bytes>,
    tty: bool,
) -> Option<StreamEnd> {
    while let Some(event) = output.next().await {
        let (bytes, end) = render_event(event, tty);
        if let Some(bytes) = bytes {
            if tx.send(Bytes::from(bytes)).await.is_err() {
                return None;
            }
        }
        if end.is_some() {
            return end;
        }
    }
    Some(StreamEnd::Finished)
}

/// The `101 UPGRADED` answer to a hijack.
fn upgrade_response(content_type: &'static str) -> Response {
    let mut resp = empty(StatusCode::SWITCHING_PROTOCOLS);
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"UPGRADED"));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("tcp"));
    resp
}

/// Forwards the client's bytes to the process's stdin until the client half-closes
/// (then closes stdin) or fails. Without `forward`, the bytes are read and dropped.
async fn pump_stdin<R: AsyncRead + Unpin>(mut rd: R, input: StreamInput, forward: bool) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if forward && input.stdin(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading a hijacked client failed");
                break;
            }
        }
    }
    if forward {
        input.close_stdin().await;
    }
}

/// Writes the agent's output to the hijacked client until the stream ends; returns how
/// it ended (`None`: writing to the client failed).
async fn pump_output<W: AsyncWrite + Unpin>(
    wr: &mut W,
    output: &mut StreamOutput,
    tty: bool,
) -> Option<StreamEnd> {
    while let Some(event) = output.next().await {
        let (bytes, end) = render_event(event, tty);
        if let Some(bytes) = bytes {
            if let Err(e) = async {
                wr.write_all(&bytes).await?;
                wr.flush().await
            }
            .await
            {
                tracing::debug!(error = %e, "writing to a hijacked client failed");
                return None;
            }
        }
        if end.is_some() {
            return end;
        }
    }
    Some(StreamEnd::Finished)
}

/// Runs a hijacked connection once hyper hands it over: client bytes to stdin, output
/// to the client. `on_end` sees how the stream ended before the client's connection is
/// closed (exec records its exit code there).
async fn serve_hijack(
    on_upgrade: hyper::upgrade::OnUpgrade,
    stream: AgentStream,
    tty: bool,
    forward_stdin: bool,
    on_end: impl FnOnce(Option<&StreamEnd>),
) {
    let AgentStream { input, mut output } = stream;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            tracing::warn!(error = %e, "the client did not complete the connection upgrade");
            input.cancel().await;
            on_end(None);
            return;
        }
    };
    let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
    let reader = tokio::spawn(pump_stdin(rd, input.clone(), forward_stdin));
    let end = pump_output(&mut wr, &mut output, tty).await;
    on_end(end.as_ref());
    if end.is_none() {
        input.cancel().await;
    }
    let _ = wr.shutdown().await;
    reader.abort();
}

/// Answers a stream request: a hijack when the client asked to upgrade, else a 200 with
/// the output streamed in the body (stdin cannot be carried then). `on_end` as for
/// [`serve_hijack`].
fn stream_response(
    call: Call,
    stream: AgentStream,
    tty: bool,
    forward_stdin: bool,
    on_end: impl FnOnce(Option<&StreamEnd>) + Send + 'static,
) -> Response {
    let content_type = stream_content_type(call.version, tty);
    match call.upgrade {
        Some(on_upgrade) => {
            tokio::spawn(serve_hijack(on_upgrade, stream, tty, forward_stdin, on_end));
            upgrade_response(content_type)
        }
        None => {
            let (tx, body) = channel_body();
            let AgentStream { input, mut output } = stream;
            tokio::spawn(async move {
                // No stdin without a hijack: tell the process at once.
                input.close_stdin().await;
                let end = output_to_body(&mut output, &tx, tty).await;
                on_end(end.as_ref());
            });
            streaming_response(content_type, body)
        }
    }
}

/// `POST /containers/{id}/attach`: the container's main process, from now on (or with
/// `logs=1` from the start). Works on a created container, as `docker run` attaches
/// before it starts it.
pub async fn attach(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let row = ids::find(cx, id).await?;
    let instance = instance_of(&row)?;
    let container = container_uuid(&row)?;
    let q = &call.query;
    let stdin = q.bool("stdin", false) && row.interactive;
    let stdout = q.bool("stdout", false);
    let stderr = q.bool("stderr", false);
    let logs = q.bool("logs", false);
    let live = q.bool("stream", false);
    let open = if live {
        StreamOpen::Attach {
            container,
            stdin,
            stdout,
            stderr,
            logs,
        }
    } else {
        // Only what was written so far (moby's attach without `stream`).
        StreamOpen::Logs {
            container,
            stdout: stdout && logs,
            stderr: stderr && logs,
            timestamps: false,
            tail: None,
            since: None,
            until: None,
            follow: false,
        }
    };
    // Opened before answering, so the agent attaches before the client's next request
    // (`/start` in `docker run`) reaches it.
    let stream = cx
        .state()
        .agents
        .open_stream(instance, None, open)
        .await
        .map_err(agent_error)?;
    tracing::info!(container.id = %row.id, project.id = %row.project_id, tty = row.tty, stdin, "attach");
    Ok(stream_response(call, stream, row.tty, stdin, |_| {}))
}

/// `POST /containers/{id}/resize?h=&w=`: the TTY size of the main process.
pub async fn resize_container(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let (height, width) = tty_size(&call)?;
    let row = ids::find(cx, id).await?;
    let instance = instance_of(&row)?;
    let container = container_uuid(&row)?;
    cx.state()
        .agents
        .call(
            instance,
            None,
            Command::Resize {
                container,
                height,
                width,
            },
        )
        .await
        .map_err(|e| match e.kind {
            AgentErrorKind::NotFound => DockerError::no_such_container(id),
            _ => agent_error(e),
        })?;
    Ok(empty(StatusCode::OK))
}

/// `h` and `w` of a resize call.
fn tty_size(call: &Call) -> Result<(u16, u16), DockerError> {
    let dim = |name: &str| -> Result<u16, DockerError> {
        let v = call.query.i64(name)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| {
            DockerError::bad_request(format!(
                "invalid value for {name}: {v} is not a terminal size (0 to 65535)"
            ))
        })
    };
    Ok((dim("h")?, dim("w")?))
}

/// The parameters of `GET /containers/{id}/logs`.
#[derive(Debug, PartialEq, Eq)]
struct LogsQuery {
    stdout: bool,
    stderr: bool,
    follow: bool,
    timestamps: bool,
    tail: Option<u64>,
    since: Option<i64>,
    until: Option<i64>,
}

impl LogsQuery {
    fn parse(q: &super::Query) -> Result<LogsQuery, DockerError> {
        let stdout = q.bool("stdout", false);
        let stderr = q.bool("stderr", false);
        if !stdout && !stderr {
            return Err(DockerError::bad_request(
                "Bad parameters: you must choose at least one stream",
            ));
        }
        Ok(LogsQuery {
            stdout,
            stderr,
            follow: q.bool("follow", false),
            timestamps: q.bool("timestamps", false),
            tail: parse_tail(q.get("tail")),
            since: parse_unix_time(q.get("since"), "since", false)?,
            until: parse_unix_time(q.get("until"), "until", true)?,
        })
    }
}

/// `tail`: "all", absent, negative or unreadable is every line (as moby reads it), N is
/// the last N.
fn parse_tail(raw: Option<&str>) -> Option<u64> {
    raw.and_then(|t| t.trim().parse::<i64>().ok())
        .and_then(|n| u64::try_from(n).ok())
}

/// A Unix time as the CLI sends it, `seconds[.nanoseconds]`, to whole seconds: rounded
/// down, or up for an upper bound, so no line of the asked-for range is lost. Absent,
/// empty or zero is no bound.
fn parse_unix_time(
    raw: Option<&str>,
    name: &str,
    round_up: bool,
) -> Result<Option<i64>, DockerError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        DockerError::bad_request(format!(
            "invalid value for {name}: {raw:?}; give a Unix time as seconds[.nanoseconds]"
        ))
    };
    let (secs, frac) = raw.split_once('.').unwrap_or((raw, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let has_frac = frac.bytes().any(|b| b != b'0');
    let secs = if round_up && has_frac { secs + 1 } else { secs };
    Ok((secs != 0 || has_frac).then_some(secs))
}

/// `GET /containers/{id}/logs`: the container's output as a streamed body, multiplexed
/// unless it has a TTY; with `follow`, until the container stops.
pub async fn logs(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let q = LogsQuery::parse(&call.query)?;
    let row = ids::find(cx, id).await?;
    let content_type = stream_content_type(call.version, row.tty);
    let Some(instance) = row
        .instance_id
        .as_deref()
        .and_then(|i| Uuid::try_parse(i).ok())
    else {
        // Never placed, so it never ran and has written nothing.
        return Ok(streaming_response(content_type, super::full(Vec::new())));
    };
    let container = container_uuid(&row)?;
    let open = StreamOpen::Logs {
        container,
        stdout: q.stdout,
        stderr: q.stderr,
        timestamps: q.timestamps,
        tail: q.tail,
        since: q.since,
        until: q.until,
        follow: q.follow,
    };
    let AgentStream {
        input: _,
        mut output,
    } = cx
        .state()
        .agents
        .open_stream(instance, None, open)
        .await
        .map_err(agent_error)?;
    let (tx, body) = channel_body();
    let tty = row.tty;
    let container_id = row.id.clone();
    tokio::spawn(async move {
        if let Some(StreamEnd::Failed { error }) = output_to_body(&mut output, &tx, tty).await {
            tracing::warn!(container.id = %container_id, error = %error, "logs stream failed");
        }
    });
    Ok(streaming_response(content_type, body))
}

// ---------------------------------------------------------------------------------
// Exec

/// How long an ended exec stays inspectable.
const EXEC_KEEP_AFTER_END: Duration = Duration::from_secs(5 * 60);
/// How long an exec that was created and never started is kept.
const EXEC_KEEP_UNSTARTED: Duration = Duration::from_secs(60 * 60);
/// Exec instances kept at most, across projects.
const MAX_EXECS: usize = 4096;
/// Exec instances one project may hold at most.
const MAX_EXECS_PER_PROJECT: usize = 256;

/// Where an exec instance is.
#[derive(Clone)]
enum ExecState {
    /// Made, not started.
    Created,
    /// Started; `input` once its stream is open (for resize).
    Running { input: Option<StreamInput> },
    /// Over, with the exit code when the engine said.
    Ended { code: Option<i64>, at: Instant },
}

/// One exec instance (`docker exec` makes one, then starts it).
#[derive(Clone)]
struct ExecEntry {
    project: String,
    /// The container's uuid.
    container: String,
    instance: Uuid,
    spec: ExecSpec,
    privileged: bool,
    created: Instant,
    state: ExecState,
}

impl ExecEntry {
    fn expired(&self, now: Instant) -> bool {
        match &self.state {
            ExecState::Created => now.duration_since(self.created) > EXEC_KEEP_UNSTARTED,
            ExecState::Running { .. } => false,
            ExecState::Ended { at, .. } => now.duration_since(*at) > EXEC_KEEP_AFTER_END,
        }
    }
}

/// Exec instances by id, scoped to the project that made them: another project's id
/// reads as unknown. Bounded; ended instances expire after [`EXEC_KEEP_AFTER_END`].
#[derive(Default)]
pub struct ExecTable {
    entries: Mutex<HashMap<String, ExecEntry>>,
}

fn no_such_exec(id: &str) -> DockerError {
    DockerError::new(
        StatusCode::NOT_FOUND,
        format!("No such exec instance: {id}"),
    )
}

impl ExecTable {
    /// Adds an instance and returns its fresh 64-hex id.
    fn insert(&self, entry: ExecEntry, now: Instant) -> Result<String, DockerError> {
        let mut entries = self.entries.lock().expect("exec table lock");
        entries.retain(|_, e| !e.expired(now));
        let of_project = entries
            .values()
            .filter(|e| e.project == entry.project)
            .count();
        if of_project >= MAX_EXECS_PER_PROJECT || entries.len() >= MAX_EXECS {
            return Err(DockerError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many exec instances ({of_project} in this project); retry once some have ended"
                ),
            ));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        entries.insert(id.clone(), entry);
        Ok(id)
    }

    /// The instance `id` of `project`.
    fn get(&self, project: &str, id: &str, now: Instant) -> Result<ExecEntry, DockerError> {
        let entries = self.entries.lock().expect("exec table lock");
        entries
            .get(id)
            .filter(|e| e.project == project && !e.expired(now))
            .cloned()
            .ok_or_else(|| no_such_exec(id))
    }

    /// Marks `id` started, unless it is running or has run.
    fn start(&self, project: &str, id: &str, now: Instant) -> Result<ExecEntry, DockerError> {
        let mut entries = self.entries.lock().expect("exec table lock");
        let entry = entries
            .get_mut(id)
            .filter(|e| e.project == project && !e.expired(now))
            .ok_or_else(|| no_such_exec(id))?;
        match entry.state {
            ExecState::Created => {
                entry.state = ExecState::Running { input: None };
                Ok(entry.clone())
            }
            ExecState::Running { .. } => Err(DockerError::conflict(format!(
                "Error: Exec command {id} is already running"
            ))),
            ExecState::Ended { .. } => Err(DockerError::conflict(format!(
                "Error: Exec command {id} has already run"
            ))),
        }
    }

    /// Keeps the input of the running instance `id`, for resize.
    fn set_input(&self, id: &str, input: StreamInput) {
        if let Some(entry) = self.entries.lock().expect("exec table lock").get_mut(id) {
            if let ExecState::Running { input: slot } = &mut entry.state {
                *slot = Some(input);
            }
        }
    }

    /// Records that `id` ended.
    fn finish(&self, id: &str, code: Option<i64>, now: Instant) {
        if let Some(entry) = self.entries.lock().expect("exec table lock").get_mut(id) {
            entry.state = ExecState::Ended { code, at: now };
        }
    }

    /// Sets the TTY size an instance that has not started yet will start with.
    fn set_console_size(&self, id: &str, size: (u16, u16)) {
        if let Some(entry) = self.entries.lock().expect("exec table lock").get_mut(id) {
            entry.spec.console_size = Some(size);
        }
    }
}

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecConfig {
    user: Option<String>,
    privileged: bool,
    tty: bool,
    console_size: Option<Vec<u16>>,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    cmd: Option<Vec<String>>,
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecStartConfig {
    detach: bool,
    console_size: Option<Vec<u16>>,
}

fn console_size(size: Option<&[u16]>) -> Option<(u16, u16)> {
    match size {
        Some([h, w]) if *h > 0 && *w > 0 => Some((*h, *w)),
        _ => None,
    }
}

/// Refuses exec in a container that is not running, in moby's words.
fn must_be_running(row: &ContainerRow) -> Result<(), DockerError> {
    let id = ids::docker_id(&row.id);
    match row.status.as_str() {
        "Running" => Ok(()),
        "Paused" => Err(DockerError::conflict(format!(
            "Container {id} is paused, unpause the container before exec"
        ))),
        "Restarting" => Err(DockerError::conflict(format!(
            "Container {id} is restarting, wait until the container is running"
        ))),
        _ => Err(DockerError::conflict(format!(
            "container {id} is not running"
        ))),
    }
}

/// `POST /containers/{id}/exec`: makes an exec instance (201 `{"Id"}`).
pub async fn exec_create(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let config: ExecConfig = call.json()?;
    let row = ids::find(cx, id).await?;
    must_be_running(&row)?;
    let cmd = config.cmd.unwrap_or_default();
    if cmd.is_empty() {
        return Err(DockerError::bad_request("No exec command specified"));
    }
    if config.privileged {
        return Err(DockerError::new(
            StatusCode::FORBIDDEN,
            "privileged exec is not allowed on Berth; run the command without --privileged",
        ));
    }
    let instance = instance_of(&row)?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let entry = ExecEntry {
        project: cx.ctx.project_id.clone(),
        container: row.id.clone(),
        instance,
        spec: ExecSpec {
            cmd,
            env: config.env.unwrap_or_default(),
            workdir: non_empty(config.working_dir),
            user: non_empty(config.user),
            tty: config.tty,
            stdin: config.attach_stdin,
            stdout: config.attach_stdout,
            stderr: config.attach_stderr,
            console_size: console_size(config.console_size.as_deref()),
        },
        privileged: false,
        created: Instant::now(),
        state: ExecState::Created,
    };
    let exec_id = cx.shared.execs.insert(entry, Instant::now())?;
    tracing::info!(container.id = %row.id, project.id = %row.project_id, exec.id = %exec_id, "exec created");
    Ok(json(
        StatusCode::CREATED,
        &serde_json::json!({ "Id": exec_id }),
    ))
}

/// `POST /exec/{id}/start`: runs the exec instance, attached (a hijack, or a streamed
/// body without an upgrade) or detached (`{"Detach":true}`, 200 at once).
pub async fn exec_start(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let config: ExecStartConfig = call.json()?;
    let project = cx.ctx.project_id.clone();
    let execs = &cx.shared.execs;
    // Everything that can fail is checked before the instance is marked started and
    // before any upgrade.
    let entry = execs.get(&project, id, Instant::now())?;
    let row = ids::find(cx, &entry.container).await?;
    must_be_running(&row)?;
    if let Some(size) = console_size(config.console_size.as_deref()) {
        execs.set_console_size(id, size);
    }
    let entry = execs.start(&project, id, Instant::now())?;
    let container = container_uuid(&row)?;
    let open = StreamOpen::Exec {
        container,
        exec: entry.spec.clone(),
    };
    let stream = match cx
        .state()
        .agents
        .open_stream(entry.instance, None, open)
        .await
    {
        Ok(stream) => stream,
        Err(e) => {
            execs.finish(id, None, Instant::now());
            return Err(agent_error(e));
        }
    };
    execs.set_input(id, stream.input.clone());
    tracing::info!(container.id = %row.id, exec.id = %id, detach = config.detach, tty = entry.spec.tty, "exec started");
    let shared = cx.shared.clone();
    let exec_id = id.to_owned();
    let record = move |end: Option<&StreamEnd>| {
        let code = match end {
            Some(StreamEnd::Exited { code }) => *code,
            Some(StreamEnd::Failed { error }) => {
                tracing::warn!(exec.id = %exec_id, error = %error, "exec failed");
                Some(126)
            }
            Some(StreamEnd::Finished) | None => None,
        };
        shared.execs.finish(&exec_id, code, Instant::now());
    };
    if config.detach {
        let AgentStream { input, mut output } = stream;
        tokio::spawn(async move {
            input.close_stdin().await;
            let mut end = None;
            while let Some(event) = output.next().await {
                if let StreamEvent::End(e) = event {
                    end = Some(e);
                }
            }
            record(end.as_ref());
        });
        return Ok(empty(StatusCode::OK));
    }
    let tty = entry.spec.tty;
    let stdin = entry.spec.stdin;
    Ok(stream_response(call, stream, tty, stdin, record))
}

/// `POST /exec/{id}/resize?h=&w=`: the TTY size of a running exec.
pub async fn exec_resize(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let (height, width) = tty_size(&call)?;
    let entry = cx
        .shared
        .execs
        .get(&cx.ctx.project_id, id, Instant::now())?;
    match entry.state {
        ExecState::Created => cx.shared.execs.set_console_size(id, (height, width)),
        ExecState::Running { input: Some(input) } => input.resize(height, width).await,
        // The stream is being opened; the size given at start applies.
        ExecState::Running { input: None } => {}
        ExecState::Ended { .. } => {
            return Err(DockerError::conflict(format!(
                "exec {id} is not running; it cannot be resized"
            )))
        }
    }
    Ok(empty(StatusCode::OK))
}

/// `GET /exec/{id}/json`: what the exec runs, whether it runs, and its exit code.
pub async fn exec_inspect(cx: &Cx, id: &str, _call: Call) -> Result<Response, DockerError> {
    let entry = cx
        .shared
        .execs
        .get(&cx.ctx.project_id, id, Instant::now())?;
    Ok(json(StatusCode::OK, &exec_view(id, &entry)))
}

fn exec_view(id: &str, entry: &ExecEntry) -> serde_json::Value {
    let (running, exit_code) = match &entry.state {
        ExecState::Created => (false, None),
        ExecState::Running { .. } => (true, None),
        // The engine not saying is read as 0 by the CLI; say so explicitly.
        ExecState::Ended { code, .. } => (false, Some(code.unwrap_or(0))),
    };
    let spec = &entry.spec;
    serde_json::json!({
        "ID": id,
        "Running": running,
        "ExitCode": exit_code,
        "ProcessConfig": {
            "tty": spec.tty,
            "entrypoint": spec.cmd.first().cloned().unwrap_or_default(),
            "arguments": spec.cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": entry.privileged,
            "user": spec.user.clone().unwrap_or_default(),
        },
        "OpenStdin": spec.stdin,
        "OpenStderr": spec.stderr,
        "OpenStdout": spec.stdout,
        "CanRemove": false,
        "ContainerID": ids::docker_id(&entry.container),
        "DetachKeys": "",
        "Pid": 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker_api::Query;

    #[test]
    fn a_frame_is_an_eight_byte_header_then_the_payload() {
        let f = frame(STREAM_STDERR, b"hello");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(&f[8..], b"hello");
        let big = frame(STREAM_STDOUT, &vec![b'x'; 70_000]);
        assert_eq!(&big[..8], &[1, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_008);
    }

    #[test]
    fn output_is_framed_without_a_tty_and_raw_with_one() {
        assert_eq!(
            encode_output(Channel::Stdout, b"hi\n", false).unwrap(),
            frame(1, b"hi\n")
        );
        assert_eq!(
            encode_output(Channel::Stderr, b"oops", false).unwrap(),
            frame(2, b"oops")
        );
        assert_eq!(
            encode_output(Channel::Stdout, b"hi\r\n", true).unwrap(),
            b"hi\r\n"
        );
        assert_eq!(encode_output(Channel::Progress, b"{}", false), None);
        assert_eq!(encode_output(Channel::Stdout, b"", false), None);
    }

    #[test]
    fn a_failure_without_a_tty_is_a_systemerr_frame() {
        let f = encode_failure("agent gone", false);
        assert_eq!(f[0], 3);
        assert_eq!(&f[8..], b"agent gone");
        let raw = String::from_utf8(encode_failure("agent gone", true)).unwrap();
        assert!(raw.contains("agent gone"), "{raw}");
        let (bytes, end) = render_event(
            StreamEvent::End(StreamEnd::Failed {
                error: AgentError::new(AgentErrorKind::Runtime, "boom"),
            }),
            false,
        );
        assert_eq!(bytes.unwrap(), frame(3, b"boom"));
        assert!(matches!(end, Some(StreamEnd::Failed { .. })));
    }

    #[test]
    fn the_content_type_follows_the_tty_and_the_api_version() {
        assert_eq!(
            stream_content_type(ApiVersion(1, 51), false),
            MULTIPLEXED_STREAM
        );
        assert_eq!(
            stream_content_type(ApiVersion(1, 42), false),
            MULTIPLEXED_STREAM
        );
        assert_eq!(stream_content_type(ApiVersion(1, 41), false), RAW_STREAM);
        assert_eq!(stream_content_type(ApiVersion(1, 51), true), RAW_STREAM);
    }

    #[test]
    fn unix_times_take_seconds_and_optional_nanoseconds() {
        assert_eq!(parse_unix_time(None, "since", false).unwrap(), None);
        assert_eq!(parse_unix_time(Some(""), "since", false).unwrap(), None);
        assert_eq!(parse_unix_time(Some("0"), "since", false).unwrap(), None);
        assert_eq!(
            parse_unix_time(Some("1700000000"), "since", false).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_unix_time(Some("1700000000.500000000"), "since", false).unwrap(),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_unix_time(Some("1700000000.5"), "until", true).unwrap(),
            Some(1_700_000_001)
        );
        assert_eq!(
            parse_unix_time(Some("1700000000.000000000"), "until", true).unwrap(),
            Some(1_700_000_000)
        );
        let e = parse_unix_time(Some("yesterday"), "since", false).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("since"), "{}", e.message);
        assert!(parse_unix_time(Some("1.2x"), "until", true).is_err());
    }

    #[test]
    fn tail_is_all_or_a_count() {
        assert_eq!(parse_tail(None), None);
        assert_eq!(parse_tail(Some("all")), None);
        assert_eq!(parse_tail(Some("-1")), None);
        assert_eq!(parse_tail(Some("10")), Some(10));
        assert_eq!(parse_tail(Some("0")), Some(0));
    }

    #[test]
    fn logs_need_at_least_one_stream() {
        let e = LogsQuery::parse(&Query::parse(Some("follow=1"))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "Bad parameters: you must choose at least one stream"
        );
        let q = LogsQuery::parse(&Query::parse(Some(
            "stdout=1&stderr=1&follow=1&tail=10&timestamps=1&since=1700000000.1",
        )))
        .unwrap();
        assert_eq!(
            q,
            LogsQuery {
                stdout: true,
                stderr: true,
                follow: true,
                timestamps: true,
                tail: Some(10),
                since: Some(1_700_000_000),
                until: None,
            }
        );
    }

    fn entry(project: &str) -> ExecEntry {
        ExecEntry {
            project: project.to_owned(),
            container: "0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6d".to_owned(),
            instance: Uuid::nil(),
            spec: ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), "exit 3".into()],
                env: vec![],
                workdir: None,
                user: None,
                tty: false,
                stdin: false,
                stdout: true,
                stderr: true,
                console_size: None,
            },
            privileged: false,
            created: Instant::now(),
            state: ExecState::Created,
        }
    }

    #[test]
    fn an_exec_is_visible_only_to_its_project() {
        let table = ExecTable::default();
        let now = Instant::now();
        let id = table.insert(entry("p1"), now).unwrap();
        assert_eq!(id.len(), 64);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(table.get("p1", &id, now).is_ok());
        let e = table.get("p2", &id, now).err().unwrap();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, format!("No such exec instance: {id}"));
        assert!(table.start("p2", &id, now).is_err());
    }

    #[test]
    fn an_exec_starts_once_and_reports_its_exit_code() {
        let table = ExecTable::default();
        let now = Instant::now();
        let id = table.insert(entry("p1"), now).unwrap();
        let view = exec_view(&id, &table.get("p1", &id, now).unwrap());
        assert_eq!(view["Running"], false);
        assert!(view["ExitCode"].is_null());
        table.start("p1", &id, now).unwrap();
        let view = exec_view(&id, &table.get("p1", &id, now).unwrap());
        assert_eq!(view["Running"], true);
        assert!(view["ExitCode"].is_null());
        let again = table.start("p1", &id, now).err().unwrap();
        assert_eq!(again.status, StatusCode::CONFLICT);
        table.finish(&id, Some(3), now);
        let view = exec_view(&id, &table.get("p1", &id, now).unwrap());
        assert_eq!(view["Running"], false);
        assert_eq!(view["ExitCode"], 3);
        assert_eq!(view["ProcessConfig"]["entrypoint"], "sh");
        assert_eq!(view["ProcessConfig"]["arguments"][1], "exit 3");
        assert_eq!(
            view["ContainerID"],
            ids::docker_id("0b3f5c1e-7d2a-4e9b-8c6d-1f2e3a4b5c6d")
        );
        assert_eq!(
            table.start("p1", &id, now).err().unwrap().status,
            StatusCode::CONFLICT
        );
    }

    #[test]
    fn ended_execs_expire_and_running_ones_do_not() {
        let table = ExecTable::default();
        let t0 = Instant::now();
        let ended = table.insert(entry("p1"), t0).unwrap();
        let running = table.insert(entry("p1"), t0).unwrap();
        table.start("p1", &ended, t0).unwrap();
        table.start("p1", &running, t0).unwrap();
        table.finish(&ended, Some(0), t0);
        let later = t0 + EXEC_KEEP_AFTER_END + Duration::from_secs(1);
        assert!(table.get("p1", &ended, t0).is_ok());
        assert_eq!(
            table.get("p1", &ended, later).err().unwrap().status,
            StatusCode::NOT_FOUND
        );
        assert!(table.get("p1", &running, later).is_ok());
        // Expired entries are dropped when the table is next written.
        table.insert(entry("p1"), later).unwrap();
        assert!(!table.entries.lock().unwrap().contains_key(&ended));
    }

    #[test]
    fn a_project_cannot_fill_the_table() {
        let table = ExecTable::default();
        let now = Instant::now();
        for _ in 0..MAX_EXECS_PER_PROJECT {
            table.insert(entry("greedy"), now).unwrap();
        }
        let e = table.insert(entry("greedy"), now).unwrap_err();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(table.insert(entry("other"), now).is_ok());
    }
}
