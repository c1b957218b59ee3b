//! Container fields that parse.

use std::fmt;

use super::ParseError;

/// A container name as Zun accepts it: 2–255 characters, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerName(String);

impl ContainerName {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<ContainerName, ParseError> {
        let ok_len = (2..=255).contains(&s.len());
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok_len && first_ok && rest_ok {
            Ok(ContainerName(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "Invalid container name '{s}': a name has 2 to 255 characters, starts with a letter or digit and contains only letters, digits, '_', '.' and '-'"
            )))
        }
    }

    /// A generated name in Zun's style, e.g. `zeta-22-container`.
    pub fn generate() -> ContainerName {
        use rand::Rng;
        const LETTERS: [&str; 24] = [
            "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
            "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
            "chi", "psi", "omega",
        ];
        let mut rng = rand::thread_rng();
        let letter = LETTERS[rng.gen_range(0..LETTERS.len())];
        ContainerName(format!("{letter}-{}-container", rng.gen_range(1..=24)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An image reference: `[registry/]repo[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef(String);

impl ImageRef {
    /// Parses an image reference.
    pub fn parse(s: &str) -> Result<ImageRef, ParseError> {
        let valid_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | ':' | '.' | '_' | '-' | '@'));
        if (2..=255).contains(&s.len()) && valid_chars && !s.starts_with(['/', ':', '@', '-', '.'])
        {
            Ok(ImageRef(s.to_owned()))
        } else {
            Err(ParseError::new(format!(
                "Invalid image '{s}': an image is 2 to 255 characters of the form [registry/]repository[:tag], e.g. busybox:latest"
            )))
        }
    }

    /// The reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A CPU limit in cores, 0.1 to 16 (Zun's bounds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuLimit(f64);

impl CpuLimit {
    /// Zun's default.
    pub const DEFAULT: CpuLimit = CpuLimit(1.0);

    /// Parses a number of cores.
    pub fn parse(v: f64) -> Result<CpuLimit, ParseError> {
        if v.is_finite() && (0.1..=16.0).contains(&v) {
            Ok(CpuLimit(v))
        } else {
            Err(ParseError::new(format!(
                "Invalid cpu {v}: cpu must be a number of cores between 0.1 and 16"
            )))
        }
    }

    /// Cores.
    pub fn cores(self) -> f64 {
        self.0
    }
}

/// A memory limit in MiB, 4 to 8192 (Zun's bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMib(i64);

impl MemoryMib {
    /// Zun's default.
    pub const DEFAULT: MemoryMib = MemoryMib(512);

    /// Parses MiB; Zun also accepts digit strings, optionally suffixed `M`.
    pub fn parse(s: &str) -> Result<MemoryMib, ParseError> {
        let digits = s.trim().trim_end_matches(['M', 'm']);
        match digits.parse::<i64>() {
            Ok(n) if (4..=8192).contains(&n) => Ok(MemoryMib(n)),
            _ => Err(ParseError::new(format!(
                "Invalid memory '{s}': memory is a whole number of MiB between 4 and 8192"
            ))),
        }
    }

    /// MiB.
    pub fn mib(self) -> i64 {
        self.0
    }
}

/// A restart policy as Zun takes it: `{Name, MaximumRetryCount}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    name: String,
    max_retries: i64,
}

impl RestartPolicy {
    /// Parses a policy name and retry count.
    pub fn parse(name: &str, max_retries: i64) -> Result<RestartPolicy, ParseError> {
        let name = name.trim();
        if !matches!(name, "no" | "always" | "on-failure" | "unless-stopped") {
            return Err(ParseError::new(format!(
                "Invalid restart policy '{name}': use one of no, always, on-failure, unless-stopped"
            )));
        }
        if max_retries < 0 {
            return Err(ParseError::new("MaximumRetryCount must be 0 or more"));
        }
        if max_retries != 0 && name != "on-failure" {
            return Err(ParseError::new(format!(
                "MaximumRetryCount applies only to on-failure, not to '{name}'"
            )));
        }
        Ok(RestartPolicy {
            name: name.to_owned(),
            max_retries,
        })
    }

    /// `no`.
    pub fn none() -> RestartPolicy {
        RestartPolicy {
            name: "no".into(),
            max_retries: 0,
        }
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Retries for on-failure.
    pub fn max_retries(&self) -> i64 {
        self.max_retries
    }
}

/// A signal for kill: a name (`SIGTERM`, `TERM`) or a number 1–64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal(String);

impl Signal {
    /// Parses a signal; Zun's clients send the string `None` for the default (SIGKILL).
    pub fn parse(s: Option<&str>) -> Result<Signal, ParseError> {
        let s = match s.map(str::trim) {
            None | Some("") | Some("None") => return Ok(Signal("SIGKILL".into())),
            Some(s) => s,
        };
        if let Ok(n) = s.parse::<u32>() {
            return if (1..=64).contains(&n) {
                Ok(Signal(n.to_string()))
            } else {
                Err(ParseError::new(format!(
                    "Invalid signal '{s}': a signal number is between 1 and 64"
                )))
            };
        }
        let upper = s.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        const KNOWN: [&str; 31] = [
            "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV",
            "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
            "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
        ];
        if KNOWN.contains(&bare) {
            Ok(Signal(format!("SIG{bare}")))
        } else {
            Err(ParseError::new(format!(
                "Invalid signal '{s}': use a signal name such as SIGTERM or KILL, or a number"
            )))
        }
    }

    /// The signal as Docker takes it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Zun's container statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerStatus {
    Creating,
    Created,
    Running,
    Stopped,
    Paused,
    Restarting,
    Deleting,
    Error,
    Unknown,
    Dead,
}

impl ContainerStatus {
    /// The name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "Creating",
            ContainerStatus::Created => "Created",
            ContainerStatus::Running => "Running",
            ContainerStatus::Stopped => "Stopped",
            ContainerStatus::Paused => "Paused",
            ContainerStatus::Restarting => "Restarting",
            ContainerStatus::Deleting => "Deleting",
            ContainerStatus::Error => "Error",
            ContainerStatus::Unknown => "Unknown",
            ContainerStatus::Dead => "Dead",
        }
    }

    /// Parses a stored status; anything unrecognised reads as Unknown.
    pub fn from_db(s: &str) -> ContainerStatus {
        match s {
            "Creating" => ContainerStatus::Creating,
            "Created" => ContainerStatus::Created,
            "Running" => ContainerStatus::Running,
            "Stopped" => ContainerStatus::Stopped,
            "Paused" => ContainerStatus::Paused,
            "Restarting" => ContainerStatus::Restarting,
            "Deleting" => ContainerStatus::Deleting,
            "Error" => ContainerStatus::Error,
            "Dead" => ContainerStatus::Dead,
            _ => ContainerStatus::Unknown,
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the service is doing to a container right now (Zun's task_state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    ContainerCreating,
    ContainerStarting,
    ContainerStopping,
    ContainerRebooting,
    ContainerPausing,
    ContainerUnpausing,
    ContainerKilling,
    ContainerDeleting,
}

impl TaskState {
    /// The name as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::ContainerCreating => "container_creating",
            TaskState::ContainerStarting => "container_starting",
            TaskState::ContainerStopping => "container_stopping",
            TaskState::ContainerRebooting => "container_rebooting",
            TaskState::ContainerPausing => "container_pausing",
            TaskState::ContainerUnpausing => "container_unpausing",
            TaskState::ContainerKilling => "container_killing",
            TaskState::ContainerDeleting => "container_deleting",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_zuns_pattern() {
        assert!(ContainerName::parse("web-1.a_b").is_ok());
        for bad in ["a", "-web", "web server", "wéb", &"x".repeat(256)] {
            assert!(ContainerName::parse(bad).is_err(), "{bad}");
        }
        assert!(ContainerName::parse(ContainerName::generate().as_str()).is_ok());
    }

    #[test]
    fn memory_accepts_digits_and_an_m_suffix_within_bounds() {
        assert_eq!(MemoryMib::parse("256").unwrap().mib(), 256);
        assert_eq!(MemoryMib::parse("64M").unwrap().mib(), 64);
        for bad in ["3", "9000", "lots", "-5", "1.5"] {
            assert!(MemoryMib::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_is_bounded_like_zun() {
        assert!(CpuLimit::parse(0.5).is_ok());
        assert!(CpuLimit::parse(0.05).is_err());
        assert!(CpuLimit::parse(17.0).is_err());
        assert!(CpuLimit::parse(f64::NAN).is_err());
    }

    #[test]
    fn retry_count_is_only_for_on_failure() {
        assert!(RestartPolicy::parse("on-failure", 3).is_ok());
        assert!(RestartPolicy::parse("always", 3).is_err());
        assert!(RestartPolicy::parse("sometimes", 0).is_err());
    }

    #[test]
    fn signals_normalise_and_none_means_kill() {
        assert_eq!(Signal::parse(None).unwrap().as_str(), "SIGKILL");
        assert_eq!(Signal::parse(Some("None")).unwrap().as_str(), "SIGKILL");
        assert_eq!(Signal::parse(Some("term")).unwrap().as_str(), "SIGTERM");
        assert_eq!(Signal::parse(Some("SIGUSR1")).unwrap().as_str(), "SIGUSR1");
        assert_eq!(Signal::parse(Some("9")).unwrap().as_str(), "9");
        assert!(Signal::parse(Some("SIGNOPE")).is_err());
        assert!(Signal::parse(Some("99")).is_err());
    }

    #[test]
    fn images_refuse_spaces_and_leading_separators() {
        assert!(ImageRef::parse("registry.local:5000/team/app:1.2").is_ok());
        assert!(ImageRef::parse("busy box").is_err());
        assert!(ImageRef::parse(":latest").is_err());
    }
}
