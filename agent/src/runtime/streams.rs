//! Byte streams the service opens on the agent: attach, exec, logs, pull.
//!
//! One task serves one stream ([`Runtime::serve_stream`]). Output goes to the relay
//! only as far as the service's credit allows, in chunks of at most
//! [`MAX_DATA_CHUNK`]; while the credit is spent the engine's output is simply not
//! read, so a stalled reader stops the process's output instead of growing memory.
//! Stdin is written to the engine by a second future, and credit for it is granted
//! back only once the bytes are written.

use std::pin::Pin;

use berth_proto::stream::{INITIAL_CREDIT, MAX_DATA_CHUNK};
use berth_proto::{
    AgentError, AgentErrorKind, AgentToRelay, Channel, ExecSpec, RegistryAuth, StreamData,
    StreamEnd, StreamId, StreamMessage, StreamOpen,
};
use bollard::container::LogOutput;
use bollard::errors::Error as EngineError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::{
    AttachContainerOptions, CreateImageOptions, LogsOptions, ResizeContainerTTYOptions,
    ResizeExecOptions, WaitContainerOptions,
};
use futures_util::{FutureExt as _, Stream, StreamExt as _};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::errors::{classify, engine_message, is_not_found};
use super::images::credentials;
use super::Runtime;

/// The engine's output of one stream, as bytes on a channel.
pub(super) type Output = Pin<Box<dyn Stream<Item = Result<(Channel, Vec<u8>), AgentError>> + Send>>;
/// The engine's stdin of one stream.
type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// What a stream's TTY resize acts on.
enum Resizable {
    Nothing,
    Container(Uuid),
    Exec(String),
}

/// How the stream's end is found once the output is over.
enum Finish {
    /// The output ending is the end (logs, pull).
    Finished,
    /// The container's main process exited: ask the engine for its code.
    Container(Uuid),
    /// The exec's process exited: ask the engine for its code.
    Exec(String),
}

/// A stream started on the engine, ready to be pumped.
struct Started {
    output: Output,
    input: Option<Input>,
    resize: Resizable,
    finish: Finish,
}

impl Runtime {
    /// Serve one stream until it ends. `inbound` carries the service's messages for
    /// it (stdin, credit, resize, cancel); every outgoing message goes to `out`.
    /// Returns the end to send, or `None` when the service cancelled (or the
    /// connection went away), in which case nothing more is sent. `started` turns
    /// `true` once the engine runs the stream (for an attach: is attached); it is
    /// dropped unchanged when that fails.
    pub(crate) async fn serve_stream(
        &self,
        stream: StreamId,
        open: StreamOpen,
        inbound: mpsc::Receiver<StreamMessage>,
        out: mpsc::Sender<AgentToRelay>,
        started: watch::Sender<bool>,
    ) -> Option<StreamEnd> {
        let ready = started;
        let started = match self.start_stream(open).await {
            Ok(started) => started,
            Err(error) => return Some(StreamEnd::Failed { error }),
        };
        ready.send_replace(true);
        drop(ready);
        let Started {
            output,
            input,
            resize,
            finish,
        } = started;
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let writer = write_stdin(stream, input, stdin_rx, out.clone());
        let pump = self.pump(stream, output, inbound, &out, stdin_tx, &resize);
        tokio::pin!(writer);
        tokio::pin!(pump);
        // The writer finishes only when the pump drops its sender; until then both run.
        let outcome = tokio::select! {
            outcome = &mut pump => outcome,
            () = &mut writer => pump.await,
        };
        match outcome {
            Pumped::Cancelled => None,
            Pumped::Failed(error) => Some(StreamEnd::Failed { error }),
            Pumped::Done => Some(self.finish(finish).await),
        }
    }

    /// Ask the engine for what the stream runs; failures are the stream's end.
    async fn start_stream(&self, open: StreamOpen) -> Result<Started, AgentError> {
        match open {
            StreamOpen::Attach {
                container,
                stdin,
                stdout,
                stderr,
                logs,
            } => {
                let inspect = self.require(container).await?;
                let tty = inspect
                    .config
                    .as_ref()
                    .and_then(|config| config.tty)
                    .unwrap_or(false);
                let options = AttachContainerOptions {
                    stream: true,
                    stdin,
                    stdout,
                    stderr,
                    logs,
                    ..Default::default()
                };
                let attached = self
                    .docker
                    .attach_container(&berth_proto::docker_name(container), Some(options))
                    .await
                    .map_err(|err| classify("attach to", container, self.instance, &err))?;
                Ok(Started {
                    output: engine_output(attached.output, tty, container, self.instance),
                    input: stdin.then_some(attached.input),
                    resize: Resizable::Container(container),
                    finish: Finish::Container(container),
                })
            }
            StreamOpen::Exec { container, exec } => self.start_exec(container, exec).await,
            StreamOpen::Logs {
                container,
                stdout,
                stderr,
                timestamps,
                tail,
                since,
                until,
                follow,
            } => {
                let inspect = self.require(container).await?;
                let tty = inspect
                    .config
                    .as_ref()
                    .and_then(|config| config.tty)
                    .unwrap_or(false);
                let options = LogsOptions {
                    follow,
                    stdout,
                    stderr,
                    since: clamp_time(since),
                    until: clamp_time(until),
                    timestamps,
                    tail: tail.map_or_else(|| "all".to_owned(), |n| n.to_string()),
                };
                let output: Output = if !stdout && !stderr {
                    // The engine refuses a request for no stream; the answer is empty.
                    Box::pin(futures_util::stream::empty())
                } else {
                    let logs = self
                        .docker
                        .logs(&berth_proto::docker_name(container), Some(options));
                    engine_output(Box::pin(logs), tty, container, self.instance)
                };
                Ok(Started {
                    output,
                    input: None,
                    resize: Resizable::Nothing,
                    finish: Finish::Finished,
                })
            }
            StreamOpen::Stats { container, stream } => Ok(Started {
                output: self.stats_output(container, stream).await?,
                input: None,
                resize: Resizable::Nothing,
                finish: Finish::Finished,
            }),
            StreamOpen::Pull { image, auth } => Ok(Started {
                output: self.pull_output(image, auth),
                input: None,
                resize: Resizable::Nothing,
                finish: Finish::Finished,
            }),
        }
    }

    async fn start_exec(&self, container: Uuid, exec: ExecSpec) -> Result<Started, AgentError> {
        self.require(container).await?;
        let name = berth_proto::docker_name(container);
        let config = ExecConfig {
            attach_stdin: Some(exec.stdin),
            attach_stdout: Some(exec.stdout),
            attach_stderr: Some(exec.stderr),
            console_size: exec
                .console_size
                .map(|(height, width)| vec![usize::from(height), usize::from(width)]),
            tty: Some(exec.tty),
            env: (!exec.env.is_empty()).then_some(exec.env),
            cmd: Some(exec.cmd),
            user: exec.user.filter(|user| !user.is_empty()),
            working_dir: exec.workdir.filter(|dir| !dir.is_empty()),
            ..Default::default()
        };
        let created = self
            .docker
            .create_exec(&name, config)
            .await
            .map_err(|err| classify("run a command in", container, self.instance, &err))?;
        let options = StartExecOptions {
            detach: false,
            tty: exec.tty,
            output_capacity: None,
        };
        let started = self
            .docker
            .start_exec(&created.id, Some(options))
            .await
            .map_err(|err| classify("run a command in", container, self.instance, &err))?;
        let StartExecResults::Attached { output, input } = started else {
            return Err(AgentError::new(
                AgentErrorKind::Runtime,
                format!(
                    "the Docker engine on instance {} started the command in container \
                     {container} detached instead of attached",
                    self.instance
                ),
            ));
        };
        if let Some((height, width)) = exec.console_size {
            // Engines older than API 1.42 ignore the size given at create.
            self.resize_exec(&created.id, height, width).await;
        }
        Ok(Started {
            output: engine_output(output, exec.tty, container, self.instance),
            input: exec.stdin.then_some(input),
            resize: Resizable::Exec(created.id.clone()),
            finish: Finish::Exec(created.id),
        })
    }

    /// The pull's progress objects, one JSON line each.
    fn pull_output(&self, image: String, auth: Option<RegistryAuth>) -> Output {
        let options = CreateImageOptions {
            from_image: Some(image.clone()),
            ..Default::default()
        };
        tracing::info!(instance.id = %self.instance, image = %image, "pulling image for a stream");
        let instance = self.instance;
        let progress =
            self.docker
                .create_image(Some(options), None, auth.as_ref().map(credentials));
        Box::pin(progress.map(move |step| match step {
            Ok(info) => {
                let mut line = serde_json::to_vec(&info).unwrap_or_default();
                line.push(b'\n');
                Ok((Channel::Progress, line))
            }
            Err(err) => Err(pull_error(&image, instance, &err)),
        }))
    }

    /// Move output out within the credit and messages in, until the output ends,
    /// the stream fails, or the service cancels.
    async fn pump(
        &self,
        stream: StreamId,
        mut output: Output,
        mut inbound: mpsc::Receiver<StreamMessage>,
        out: &mpsc::Sender<AgentToRelay>,
        stdin: mpsc::UnboundedSender<Stdin>,
        resize: &Resizable,
    ) -> Pumped {
        let mut credit = u64::from(INITIAL_CREDIT);
        // Output read from the engine but not yet sent for want of credit.
        let mut held: Option<(Channel, Vec<u8>)> = None;
        let mut output_done = false;
        // An item read ahead while merging ready output, not yet taken.
        let mut lookahead: Option<Next> = None;
        loop {
            if let Some((channel, bytes)) = held.take() {
                if credit > 0 {
                    let room = usize::try_from(credit).unwrap_or(usize::MAX);
                    let take = bytes.len().min(MAX_DATA_CHUNK).min(room);
                    let (now, later) = bytes.split_at(take);
                    let data = StreamMessage::Data(StreamData {
                        channel,
                        data: now.to_vec(),
                    });
                    if !send(out, stream, data).await {
                        return Pumped::Cancelled;
                    }
                    credit -= take as u64;
                    if !later.is_empty() {
                        held = Some((channel, later.to_vec()));
                    }
                    continue;
                }
                held = Some((channel, bytes));
            } else if output_done {
                return Pumped::Done;
            }
            let can_read = held.is_none() && !output_done;
            if can_read {
                if let Some(next) = lookahead.take() {
                    let chunk = merge_ready(next, &mut output, &mut lookahead);
                    if let Some(failed) = apply(chunk, &mut held, &mut output_done) {
                        return failed;
                    }
                    continue;
                }
            }
            tokio::select! {
                message = inbound.recv() => match message {
                    None | Some(StreamMessage::Cancel) => return Pumped::Cancelled,
                    Some(StreamMessage::Credit { bytes }) => {
                        credit = credit.saturating_add(u64::from(bytes));
                    }
                    Some(StreamMessage::Data(data)) => {
                        let _ = stdin.send(Stdin::Data(data.data));
                    }
                    Some(StreamMessage::CloseStdin) => {
                        let _ = stdin.send(Stdin::Close);
                    }
                    Some(StreamMessage::Resize { height, width }) => match resize {
                        Resizable::Nothing => {}
                        Resizable::Container(container) => {
                            self.resize_container(*container, height, width).await;
                        }
                        Resizable::Exec(exec) => self.resize_exec(exec, height, width).await,
                    },
                    Some(StreamMessage::End(_)) => {}
                },
                chunk = output.next(), if can_read => {
                    let chunk = merge_ready(chunk, &mut output, &mut lookahead);
                    if let Some(failed) = apply(chunk, &mut held, &mut output_done) {
                        return failed;
                    }
                }
            }
        }
    }

    async fn resize_container(&self, container: Uuid, height: u16, width: u16) {
        let options = ResizeContainerTTYOptions {
            h: i32::from(height),
            w: i32::from(width),
        };
        if let Err(err) = self
            .docker
            .resize_container_tty(&berth_proto::docker_name(container), options)
            .await
        {
            tracing::debug!(container.id = %container, error = %engine_message(&err), "TTY resize refused");
        }
    }

    async fn resize_exec(&self, exec: &str, height: u16, width: u16) {
        let options = ResizeExecOptions {
            h: i32::from(height),
            w: i32::from(width),
        };
        if let Err(err) = self.docker.resize_exec(exec, options).await {
            tracing::debug!(exec.id = %exec, error = %engine_message(&err), "exec TTY resize refused");
        }
    }

    /// The end of a stream whose output ran out.
    async fn finish(&self, finish: Finish) -> StreamEnd {
        match finish {
            Finish::Finished => StreamEnd::Finished,
            Finish::Exec(exec) => match self.docker.inspect_exec(&exec).await {
                Ok(inspect) => StreamEnd::Exited {
                    code: inspect.exit_code,
                },
                Err(err) => StreamEnd::Failed {
                    error: AgentError::new(
                        AgentErrorKind::Runtime,
                        format!(
                            "the command's output ended but its exit code could not be read \
                             from the engine of instance {}: {}",
                            self.instance,
                            engine_message(&err)
                        ),
                    ),
                },
            },
            Finish::Container(container) => {
                let options = WaitContainerOptions {
                    condition: "not-running".to_owned(),
                };
                let mut wait = self
                    .docker
                    .wait_container(&berth_proto::docker_name(container), Some(options));
                match wait.next().await {
                    Some(Ok(response)) => StreamEnd::Exited {
                        code: Some(response.status_code),
                    },
                    Some(Err(EngineError::DockerContainerWaitError { code, .. })) => {
                        StreamEnd::Exited { code: Some(code) }
                    }
                    // Removed already (auto-remove): the code is gone with it.
                    Some(Err(err)) if is_not_found(&err) => StreamEnd::Exited { code: None },
                    Some(Err(err)) => StreamEnd::Failed {
                        error: classify("wait for", container, self.instance, &err),
                    },
                    None => StreamEnd::Exited { code: None },
                }
            }
        }
    }
}

/// One poll of a stream's output: an item, or `None` at its end.
type Next = Option<Result<(Channel, Vec<u8>), AgentError>>;

/// `next`, merged with the output of the same channel that is ready at once (up to
/// one chunk), so a burst of tiny writes travels as few messages. The first item that
/// cannot be merged is kept in `lookahead`.
fn merge_ready(next: Next, output: &mut Output, lookahead: &mut Option<Next>) -> Next {
    let Some(Ok((channel, mut bytes))) = next else {
        return next;
    };
    while bytes.len() < MAX_DATA_CHUNK {
        match output.next().now_or_never() {
            None => break,
            Some(Some(Ok((more_channel, more)))) if more_channel == channel => {
                bytes.extend(more);
            }
            Some(other) => {
                *lookahead = Some(other);
                break;
            }
        }
    }
    Some(Ok((channel, bytes)))
}

/// Take one output item into `held`; the failure to end the stream with, if any.
fn apply(next: Next, held: &mut Option<(Channel, Vec<u8>)>, done: &mut bool) -> Option<Pumped> {
    match next {
        None => *done = true,
        Some(Err(error)) => return Some(Pumped::Failed(error)),
        Some(Ok((channel, bytes))) => {
            if !bytes.is_empty() {
                *held = Some((channel, bytes));
            }
        }
    }
    None
}

/// How pumping a stream ended.
enum Pumped {
    /// The output ran out: the stream ends normally.
    Done,
    /// The engine failed mid-stream.
    Failed(AgentError),
    /// The service cancelled or the connection went away: send nothing more.
    Cancelled,
}

/// What the pump hands the stdin writer.
enum Stdin {
    Data(Vec<u8>),
    Close,
}

/// Write stdin to the engine in order, granting the service credit for each chunk
/// once it is written. Bytes for a stream without stdin are dropped but still
/// credited, so the sender never stalls on them.
///
/// The queue is unbounded on purpose: the service never has more than
/// [`INITIAL_CREDIT`] bytes of stdin in flight, which bounds it.
async fn write_stdin(
    stream: StreamId,
    mut input: Option<Input>,
    mut rx: mpsc::UnboundedReceiver<Stdin>,
    out: mpsc::Sender<AgentToRelay>,
) {
    while let Some(op) = rx.recv().await {
        match op {
            Stdin::Data(bytes) => {
                if let Some(writer) = input.as_mut() {
                    let written = async {
                        writer.write_all(&bytes).await?;
                        writer.flush().await
                    }
                    .await;
                    if let Err(err) = written {
                        tracing::debug!(stream.id = %stream, error = %err, "stdin write failed; dropping further input");
                        input = None;
                    }
                }
                let bytes = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                if !send(&out, stream, StreamMessage::Credit { bytes }).await {
                    return;
                }
            }
            Stdin::Close => {
                if let Some(mut writer) = input.take() {
                    if let Err(err) = writer.shutdown().await {
                        tracing::debug!(stream.id = %stream, error = %err, "closing stdin failed");
                    }
                }
            }
        }
    }
}

/// Queue one message on the stream; `false` when the connection is gone.
async fn send(out: &mpsc::Sender<AgentToRelay>, stream: StreamId, message: StreamMessage) -> bool {
    out.send(AgentToRelay::Stream { stream, message })
        .await
        .is_ok()
}

/// The engine's multiplexed output as channel-tagged bytes. With a TTY there is one
/// stream, and all of it is stdout.
fn engine_output(
    output: Pin<Box<dyn Stream<Item = Result<LogOutput, EngineError>> + Send>>,
    tty: bool,
    container: Uuid,
    instance: Uuid,
) -> Output {
    Box::pin(output.filter_map(move |chunk| {
        let item = match chunk {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                Some(Ok((Channel::Stdout, message.to_vec())))
            }
            Ok(LogOutput::StdErr { message }) => {
                let channel = if tty {
                    Channel::Stdout
                } else {
                    Channel::Stderr
                };
                Some(Ok((channel, message.to_vec())))
            }
            Ok(LogOutput::StdIn { .. }) => None,
            Err(err) => Some(Err(classify(
                "read the output of",
                container,
                instance,
                &err,
            ))),
        };
        std::future::ready(item)
    }))
}

/// A pull failure: an image the registry does not have is `ImageNotFound`, anything
/// else (registry unreachable, refused credentials) is `Runtime`.
fn pull_error(image: &str, instance: Uuid, err: &EngineError) -> AgentError {
    let message = engine_message(err);
    let lower = message.to_ascii_lowercase();
    let missing = is_not_found(err)
        || lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("does not exist");
    let kind = if missing {
        AgentErrorKind::ImageNotFound
    } else {
        AgentErrorKind::Runtime
    };
    AgentError::new(
        kind,
        format!("could not pull image '{image}' on instance {instance}: {message}"),
    )
}

/// A Unix time as the engine's log query takes it (0 for none).
fn clamp_time(time: Option<i64>) -> i32 {
    time.map_or(0, |t| i32::try_from(t.max(0)).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_is_image_not_found_and_an_unreachable_registry_is_runtime() {
        let missing = EngineError::DockerStreamError {
            error: "manifest for 127.0.0.1:5000/nope:latest not found: manifest unknown".to_owned(),
        };
        assert_eq!(
            pull_error("x", Uuid::nil(), &missing).kind,
            AgentErrorKind::ImageNotFound
        );
        let refused = EngineError::DockerResponseServerError {
            status_code: 500,
            message:
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused"
                    .to_owned(),
        };
        let error = pull_error("127.0.0.1:1/x", Uuid::nil(), &refused);
        assert_eq!(error.kind, AgentErrorKind::Runtime);
        assert!(
            error.message.contains("connection refused"),
            "{}",
            error.message
        );
    }

    #[test]
    fn log_times_beyond_the_query_range_are_clamped() {
        assert_eq!(clamp_time(None), 0);
        assert_eq!(clamp_time(Some(-5)), 0);
        assert_eq!(clamp_time(Some(i64::MAX)), i32::MAX);
    }
}
