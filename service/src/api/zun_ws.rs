//! Zun's attach and interactive exec over WebSocket, served by Berth itself (Zun runs
//! a separate `zun-wsproxy`).
//!
//! `GET /v1/containers/{c}/attach` and `POST …/execute?interactive=true` hand out a
//! URL `ws[s]://<Berth>/v1/websocket?token=T&uuid=C[&exec_id=E]`. The token is a
//! random, single-use ticket that expires after [`TICKET_TTL`] and is bound to the
//! project and the container (never the caller's Keystone token, which must not end
//! up in URLs and logs). Connecting spends it; the bytes then go through the agent's
//! stream (service → relay → agent), as for the Docker endpoint's attach and exec:
//! the client's frames (binary, or text) are the process's stdin, the process's
//! output goes back as binary frames. That is what python-zunclient's websocket
//! client (`openstack appcontainer attach`, `exec --interactive`) sends and expects;
//! it offers the subprotocols `binary` and `base64` and insists that the server
//! chooses one, so Berth answers `binary`. The terminal size comes through the REST
//! calls `resize` (attach) and `execute_resize` (exec).
//!
//! Tickets and exec sessions live in this process (bounded); a deployment with
//! several service replicas must send a client's WebSocket to the replica that
//! answered its attach/execute call.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use berth_proto::{Channel, ExecSpec, StreamEnd, StreamOpen};
use futures_util::StreamExt as _;

use super::error::ApiError;
use crate::agents::{AgentStream, StreamEvent, StreamInput};
use crate::containers::{agent_error, placement_of, require_status};
use crate::db::containers::{self as q, Lookup};
use crate::db::models::ContainerRow;
use crate::domain::ContainerStatus;
use crate::state::AppState;

/// How long a WebSocket ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(120);
/// How long an ended exec is remembered (its resize then says it ended).
const EXEC_KEEP_AFTER_END: Duration = Duration::from_secs(300);
/// Tickets plus exec sessions one project may hold.
const MAX_PER_PROJECT: usize = 128;
/// Tickets plus exec sessions held at most.
const MAX_TOTAL: usize = 8192;
/// Largest frame accepted from a client.
const MAX_FRAME: usize = 64 * 1024;

/// Registers `/websocket` (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/websocket", web::get().to(websocket));
}

#[derive(Clone)]
enum ExecState {
    /// Made by `execute`, not connected yet; the size `execute_resize` gave.
    Created {
        size: Option<(u16, u16)>,
    },
    /// Connected; `input` resizes it.
    Running {
        input: StreamInput,
    },
    Ended {
        at: Instant,
    },
}

#[derive(Clone)]
struct ExecSession {
    project: String,
    container: String,
    cmd: Vec<String>,
    state: ExecState,
    created: Instant,
}

#[derive(Clone)]
struct Ticket {
    project: String,
    container: String,
    /// `None`: attach; else the exec session it starts.
    exec_id: Option<String>,
    expires: Instant,
}

#[derive(Default)]
struct Table {
    tickets: HashMap<String, Ticket>,
    execs: HashMap<String, ExecSession>,
}

impl Table {
    fn expire(&mut self, now: Instant) {
        self.tickets.retain(|_, t| t.expires > now);
        let tickets = &self.tickets;
        self.execs.retain(|id, e| match &e.state {
            // Unconnected sessions live as long as a ticket can still start them.
            ExecState::Created { .. } => {
                now.duration_since(e.created) <= TICKET_TTL
                    || tickets.values().any(|t| t.exec_id.as_deref() == Some(id))
            }
            ExecState::Running { .. } => true,
            ExecState::Ended { at } => now.duration_since(*at) <= EXEC_KEEP_AFTER_END,
        });
    }

    fn room_for(&self, project: &str) -> Result<(), ApiError> {
        let held = self
            .tickets
            .values()
            .filter(|t| t.project == project)
            .count()
            + self.execs.values().filter(|e| e.project == project).count();
        if held >= MAX_PER_PROJECT || self.tickets.len() + self.execs.len() >= MAX_TOTAL {
            return Err(ApiError::Unavailable(format!(
                "Too many attach and exec sessions are open ({held} in this project); close some and retry."
            )));
        }
        Ok(())
    }
}

/// Process-wide: every actix worker must see the tickets the others issued.
static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(|| Mutex::new(Table::default()));

fn table() -> std::sync::MutexGuard<'static, Table> {
    // A panic while holding the lock leaves plain data behind; keep serving.
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::Rng::fill(&mut rand::thread_rng(), &mut buf[..]);
    hex::encode(buf)
}

/// `ws://…` or `wss://…` for the service's public URL.
fn ws_base(public_url: &str) -> String {
    if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_owned()
    }
}

fn issue(
    public_url: &str,
    project: &str,
    container: &str,
    exec_id: Option<&str>,
) -> Result<String, ApiError> {
    let token = random_hex(32);
    let now = Instant::now();
    let mut t = table();
    t.expire(now);
    t.room_for(project)?;
    t.tickets.insert(
        token.clone(),
        Ticket {
            project: project.to_owned(),
            container: container.to_owned(),
            exec_id: exec_id.map(str::to_owned),
            expires: now + TICKET_TTL,
        },
    );
    let mut url = format!(
        "{}/v1/websocket?token={token}&uuid={container}",
        ws_base(public_url)
    );
    if let Some(e) = exec_id {
        url.push_str("&exec_id=");
        url.push_str(e);
    }
    Ok(url)
}

/// The URL of an attach to `row`'s main process.
pub fn attach_url(public_url: &str, row: &ContainerRow) -> Result<String, ApiError> {
    issue(public_url, &row.project_id, &row.id, None)
}

/// Makes an interactive exec session of `cmd` in `row` (started when its WebSocket
/// connects) and returns its id (64 hex) and URL.
pub fn create_exec(
    public_url: &str,
    row: &ContainerRow,
    cmd: Vec<String>,
) -> Result<(String, String), ApiError> {
    let exec_id = random_hex(32);
    {
        let mut t = table();
        t.expire(Instant::now());
        t.room_for(&row.project_id)?;
        t.execs.insert(
            exec_id.clone(),
            ExecSession {
                project: row.project_id.clone(),
                container: row.id.clone(),
                cmd,
                state: ExecState::Created { size: None },
                created: Instant::now(),
            },
        );
    }
    let url = issue(public_url, &row.project_id, &row.id, Some(&exec_id))?;
    Ok((exec_id, url))
}

/// Resizes the TTY of exec `exec_id` of `row` (before it connects: the size it starts
/// with).
pub async fn resize_exec(
    row: &ContainerRow,
    exec_id: &str,
    height: u16,
    width: u16,
) -> Result<(), ApiError> {
    let input = {
        let mut t = table();
        t.expire(Instant::now());
        let session = t
            .execs
            .get_mut(exec_id)
            .filter(|e| e.project == row.project_id && e.container == row.id)
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "Exec {exec_id} of container {} could not be found; run execute with interactive=true first.",
                    row.id
                ))
            })?;
        match &mut session.state {
            ExecState::Created { size } => {
                *size = Some((height, width));
                None
            }
            ExecState::Running { input } => Some(input.clone()),
            ExecState::Ended { .. } => {
                return Err(ApiError::InvalidState(format!(
                    "Exec {exec_id} of container {} has ended; it cannot be resized.",
                    row.id
                )))
            }
        }
    };
    if let Some(input) = input {
        input.resize(height, width).await;
    }
    Ok(())
}

fn mark_exec(exec_id: &str, state: ExecState) {
    if let Some(e) = table().execs.get_mut(exec_id) {
        e.state = state;
    }
}

/// `GET /v1/websocket?token=&uuid=[&exec_id=]`: spends the ticket and joins the
/// client to the container's main process (attach) or to a new exec.
async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let params: HashMap<String, String> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    let (Some(token), Some(uuid)) = (params.get("token"), params.get("uuid")) else {
        return Err(ApiError::BadRequest(
            "A container WebSocket needs token and uuid in its URL; get the URL from attach or execute with interactive=true.".into(),
        ));
    };
    let upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(ApiError::BadRequest(
            "This URL is a WebSocket: connect with a WebSocket client (Upgrade: websocket).".into(),
        ));
    }
    let refused = || {
        ApiError::Unauthorized(
            "The WebSocket token is unknown, used or expired; ask attach or execute for a new URL."
                .into(),
        )
    };
    let ticket = {
        let mut t = table();
        t.expire(Instant::now());
        t.tickets.remove(token.as_str()).ok_or_else(refused)?
    };
    if &ticket.container != uuid || params.get("exec_id") != ticket.exec_id.as_ref() {
        return Err(refused());
    }
    let (project, container) = (ticket.project.clone(), ticket.container.clone());
    let row = match state
        .db
        .run(move |c| q::lookup(c, Some(&project), &container))
        .await?
    {
        Lookup::Found(row) => *row,
        _ => {
            return Err(ApiError::NotFound(format!(
                "Container {uuid} could not be found."
            )))
        }
    };
    let (instance, container) = placement_of(&row)?;
    let (open, tty, stdin) = match &ticket.exec_id {
        None => {
            require_status(&row, &[ContainerStatus::Running], "attach")?;
            (
                StreamOpen::Attach {
                    container,
                    stdin: row.interactive,
                    stdout: true,
                    stderr: true,
                    logs: false,
                },
                row.tty,
                row.interactive,
            )
        }
        Some(exec_id) => {
            require_status(&row, &[ContainerStatus::Running], "execute")?;
            let session = table().execs.get(exec_id).cloned().ok_or_else(refused)?;
            let size = match session.state {
                ExecState::Created { size } => size,
                _ => return Err(refused()),
            };
            (
                StreamOpen::Exec {
                    container,
                    exec: ExecSpec {
                        cmd: session.cmd,
                        env: Vec::new(),
                        workdir: None,
                        user: None,
                        tty: true,
                        stdin: true,
                        stdout: true,
                        stderr: true,
                        console_size: size,
                    },
                },
                true,
                true,
            )
        }
    };
    let stream = state
        .agents
        .open_stream(instance, None, open)
        .await
        .map_err(agent_error)?;
    if let Some(exec_id) = &ticket.exec_id {
        mark_exec(
            exec_id,
            ExecState::Running {
                input: stream.input.clone(),
            },
        );
    }
    let offered_binary = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("binary"));
    let (mut response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("The WebSocket handshake failed: {e}")))?;
    if offered_binary {
        response.headers_mut().insert(
            actix_web::http::header::SEC_WEBSOCKET_PROTOCOL,
            actix_web::http::header::HeaderValue::from_static("binary"),
        );
    }
    tracing::info!(
        container.id = %row.id,
        project.id = %row.project_id,
        exec = ticket.exec_id.is_some(),
        tty,
        "container websocket connected"
    );
    let exec_id = ticket.exec_id.clone();
    actix_web::rt::spawn(async move {
        pump(session, messages.max_frame_size(MAX_FRAME), stream, stdin).await;
        if let Some(exec_id) = exec_id {
            mark_exec(&exec_id, ExecState::Ended { at: Instant::now() });
        }
    });
    Ok(response)
}

/// Client frames to stdin, output to the client, until either side ends.
async fn pump(
    mut session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    stream: AgentStream,
    forward_stdin: bool,
) {
    let AgentStream { input, mut output } = stream;
    if !forward_stdin {
        input.close_stdin().await;
    }
    let mut reason = None;
    loop {
        tokio::select! {
            msg = messages.next() => match msg {
                Some(Ok(actix_ws::Message::Binary(bytes))) => {
                    if forward_stdin && input.stdin(bytes.to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(Ok(actix_ws::Message::Text(text))) => {
                    if forward_stdin && input.stdin(text.as_bytes().to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(Ok(actix_ws::Message::Ping(p))) => {
                    if session.pong(&p).await.is_err() {
                        break;
                    }
                }
                Some(Ok(actix_ws::Message::Close(_))) | None => {
                    input.cancel().await;
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "container websocket protocol error");
                    input.cancel().await;
                    return;
                }
            },
            event = output.next() => match event {
                Some(StreamEvent::Data(d)) => {
                    if matches!(d.channel, Channel::Stdout | Channel::Stderr)
                        && !d.data.is_empty()
                        && session.binary(d.data).await.is_err()
                    {
                        input.cancel().await;
                        return;
                    }
                }
                Some(StreamEvent::End(end)) => {
                    if let StreamEnd::Failed { error } = &end {
                        tracing::warn!(error = %error, "container websocket stream failed");
                        let _ = session
                            .binary(format!("\r\nError from Berth: {}\r\n", error.message).into_bytes())
                            .await;
                        reason = Some(actix_ws::CloseReason {
                            code: actix_ws::CloseCode::Error,
                            description: Some(error.message.chars().take(100).collect()),
                        });
                    }
                    break;
                }
                None => break,
            },
        }
    }
    let _ = session
        .close(reason.or(Some(actix_ws::CloseCode::Normal.into())))
        .await;
}

/// For tests of the table: whether a ticket exists.
#[cfg(test)]
fn has_ticket(token: &str) -> bool {
    table().tickets.contains_key(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_follow_the_public_scheme() {
        assert_eq!(ws_base("http://h:9517"), "ws://h:9517");
        assert_eq!(ws_base("https://h"), "wss://h");
    }

    #[test]
    fn a_ticket_is_bound_to_its_project_and_is_bounded() {
        let url = issue("http://h", "p-bound", "c1", None).unwrap();
        let token = url
            .split("token=")
            .nth(1)
            .and_then(|s| s.split('&').next())
            .unwrap()
            .to_owned();
        assert_eq!(token.len(), 64);
        assert!(has_ticket(&token));
        assert_eq!(table().tickets[&token].project, "p-bound");
        for _ in 1..MAX_PER_PROJECT {
            issue("http://h", "p-bound", "c1", None).unwrap();
        }
        assert!(matches!(
            issue("http://h", "p-bound", "c1", None),
            Err(ApiError::Unavailable(_))
        ));
        assert!(issue("http://h", "p-other", "c1", None).is_ok());
    }
}
