//! Where each setting comes from: its flag, else its `SIGNALING_*`
//! variable, else the config file (`--config FILE` or `SIGNALING_CONFIG`:
//! TOML, the flags' long names as keys), else the default. The file's
//! values are put in as the flags' defaults, so clap's own order (flag,
//! then environment, then default) does the rest and every value goes
//! through the flag's own parser. `--print-config` shows the outcome, each
//! value with where it came from, secrets redacted.

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};
use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "the config file {path} sets `{key}`, which is no setting (keys are the flags' names, as `redis-url`)"
    )]
    Unknown { path: PathBuf, key: String },
    #[error(
        "the config file {path} sets `{key}` to a table or date: give a string, number, boolean or list"
    )]
    Value { path: PathBuf, key: String },
    #[error("PORT is `{0}`: not a port number")]
    Port(String),
    /// Bad flags, and `--help` / `--version` (clap prints those itself).
    #[error(transparent)]
    Args(#[from] clap::Error),
}

/// The configuration, and what is needed to say where each value came from.
pub struct Loaded {
    pub config: Config,
    command: Command,
    matches: ArgMatches,
    /// `PORT` gave the listen address's port.
    port_applied: bool,
}

/// From this process's arguments and environment.
pub fn load() -> Result<Loaded, ConfigError> {
    load_from(std::env::args_os().collect())
}

/// From `args` (the program's name first) and this process's environment.
pub fn load_from(args: Vec<OsString>) -> Result<Loaded, ConfigError> {
    let file = config_path(&args).or_else(|| std::env::var_os("SIGNALING_CONFIG").map(Into::into));
    let mut command = Config::command();
    if let Some(path) = &file {
        command = with_file(command, path)?;
    }
    let matches = command.try_get_matches_from_mut(args)?;
    let mut config = Config::from_arg_matches(&matches)?;
    // Container platforms say which port to serve on in PORT.
    let mut port_applied = false;
    if matches.value_source("listen") == Some(ValueSource::DefaultValue)
        && file_sets(&command, "listen").is_none()
    {
        if let Some(port) = std::env::var_os("PORT") {
            let text = port.to_string_lossy().into_owned();
            let port: u16 = text.parse().map_err(|_| ConfigError::Port(text))?;
            config.listen.set_port(port);
            port_applied = true;
        }
    }
    Ok(Loaded {
        config,
        command,
        matches,
        port_applied,
    })
}

/// Every default, reading neither the environment nor a file: what a test
/// or an embedding program starts from.
pub fn defaults() -> Config {
    let mut command = Config::command().mut_args(|a| a.env(None::<&str>));
    // The defaults are the flags' own: they always parse.
    let matches = command
        .try_get_matches_from_mut(["signaling"])
        .expect("the built-in defaults parse");
    Config::from_arg_matches(&matches).expect("the built-in defaults parse")
}

/// `--config FILE` or `--config=FILE` among the arguments.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            return None;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(v.into());
        }
    }
    None
}

/// Marks the arguments whose default came from the file (for the report).
const FROM_FILE: &str = "config file";

fn with_file(mut command: Command, path: &Path) -> Result<Command, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Parse {
        path: path.into(),
        source: Box::new(source),
    })?;
    for (key, value) in table {
        let long = key.replace('_', "-");
        let found = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .map(|a| (a.get_id().clone(), a.get_value_delimiter()));
        let Some((id, delimiter)) = found else {
            return Err(ConfigError::Unknown {
                path: path.into(),
                key,
            });
        };
        let bad = || ConfigError::Value {
            path: path.into(),
            key: key.clone(),
        };
        let mut values = Vec::new();
        match value {
            toml::Value::Array(items) => {
                for item in items {
                    values.push(scalar(item).ok_or_else(bad)?);
                }
            }
            other => {
                let v = scalar(other).ok_or_else(bad)?;
                match delimiter {
                    Some(d) => values.extend(v.split(d).map(str::to_owned)),
                    None => values.push(v),
                }
            }
        }
        command = command.mut_arg(id, |a| {
            a.default_values(values)
                .help_heading(Some(FROM_FILE))
                .hide_default_value(true)
        });
    }
    Ok(command)
}

fn scalar(v: toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Whether the file gave `id` its default.
fn file_sets<'a>(command: &'a Command, id: &str) -> Option<&'a clap::Arg> {
    command
        .get_arguments()
        .find(|a| a.get_id() == id && a.get_help_heading() == Some(FROM_FILE))
}

impl Loaded {
    /// The effective configuration as TOML that `--config` takes back, each
    /// line with its source; secrets (and the Redis URL's password) shown
    /// as `<redacted>`.
    pub fn describe(&self) -> String {
        let mut out =
            String::from("# effective configuration (flag > environment > file > default)\n");
        for arg in self.command.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(long) = arg.get_long() else { continue };
            if matches!(long, "help" | "version" | "config" | "print-config") {
                continue;
            }
            if id == "listen" && self.port_applied {
                let _ = writeln!(
                    out,
                    "listen = {}  # PORT",
                    toml_string(&self.config.listen.to_string())
                );
                continue;
            }
            let values: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = match self.matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag",
                Some(ValueSource::EnvVariable) => "environment",
                Some(ValueSource::DefaultValue) if file_sets(&self.command, id).is_some() => "file",
                Some(ValueSource::DefaultValue) => "default",
                _ => "unset",
            };
            let secret = id.contains("secret") && !id.ends_with("_file");
            let shown: Vec<String> = values
                .iter()
                .map(|v| match id {
                    "redis_url" => redact_password(v),
                    _ if secret => "<redacted>".into(),
                    _ => v.clone(),
                })
                .collect();
            let value = match shown.as_slice() {
                [] => {
                    let _ = writeln!(out, "# {long} = (not set)");
                    continue;
                }
                [one] if arg.get_value_delimiter().is_none() => toml_string(one),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(|v| toml_string(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = writeln!(out, "{long} = {value}  # {source}");
        }
        out
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `scheme://user:password@host/...` with the password replaced.
fn redact_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority = rest.split('/').next().unwrap_or(rest);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    // A user name alone may be a password to some clients: all of it goes.
    let user = match authority[..at].split_once(':') {
        Some((user, _)) => format!("{user}:"),
        None => String::new(),
    };
    format!("{}{user}<redacted>{}", &url[..start], &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn a_redis_urls_password_is_redacted() {
        assert_eq!(
            redact_password("redis://app:hunter2@10.0.0.5:6379/0"),
            "redis://app:<redacted>@10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_password("redis://:hunter2@host"),
            "redis://:<redacted>@host"
        );
        assert_eq!(redact_password("redis://host:6379"), "redis://host:6379");
    }

    #[test]
    fn the_defaults_read_no_environment() {
        // SAFETY: no other test of this crate reads this variable.
        unsafe { std::env::set_var("SIGNALING_PRESENCE_STREAM_MAXLEN", "7") };
        let from_env = Config::try_parse_from(["signaling"]).map(|c| c.presence_stream_maxlen);
        assert_eq!(defaults().presence_stream_maxlen, 100_000);
        unsafe { std::env::remove_var("SIGNALING_PRESENCE_STREAM_MAXLEN") };
        assert_eq!(
            from_env.ok(),
            Some(7),
            "the variable was seen by a normal parse"
        );
    }
}
