//! Where flag values come from: command-line flags, then `HUBBUB_*`
//! environment variables, then the TOML file named by `--config`, then the
//! built-in defaults (first found wins).
//!
//! Every layer is turned into flags and parsed by the one clap definition,
//! so a value from the file or the environment is checked exactly like the
//! same flag, and a new flag is configurable in all three places at once.
//! File keys are the flag names with `_` or `-` (`max_backlog_bytes = 4096`);
//! the variable is `HUBBUB_` plus the name in capitals with `_`
//! (`HUBBUB_MAX_BACKLOG_BYTES=4096`; lists are comma-separated).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};

use super::Args;

/// Flags that only steer the process and are never read from a file.
const NOT_IN_FILE: [&str; 3] = ["config", "check_config", "help"];

/// Why the layers could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The file could not be read: fix the path given to --config.
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// A key or value in the file is wrong: the message names it.
    #[error("config file {path}: field `{field}`: {reason}")]
    Field {
        path: String,
        field: String,
        reason: String,
    },
    /// Clap refused the merged flags (message names the flag and reason);
    /// `--help` and `--version` also arrive here and are printed as they are.
    #[error("{0}")]
    Clap(#[from] clap::Error),
}

/// Flags, environment and file merged into `Args`, plus the matches, which
/// remember where each value came from (for `--check-config`).
pub struct Layered {
    pub args: Args,
    pub matches: ArgMatches,
    /// Keys whose value came from the file or the environment.
    pub sources: BTreeMap<String, &'static str>,
}

/// Parses `argv` with `env` and the file `--config` names (or `HUBBUB_CONFIG`).
pub fn parse(argv: Vec<OsString>, env: &BTreeMap<String, String>) -> Result<Layered, LayerError> {
    let command = Args::command();
    let flags_only = command.clone().try_get_matches_from(argv.clone())?;
    let config_path = flags_only
        .get_one::<std::path::PathBuf>("config")
        .cloned()
        .or_else(|| env.get("HUBBUB_CONFIG").map(Into::into));
    let file = match &config_path {
        Some(path) => read_file(path)?,
        None => toml::Table::new(),
    };
    let mut injected: Vec<OsString> = Vec::new();
    let mut sources = BTreeMap::new();
    let mut known = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        known.push(long.to_string());
        if NOT_IN_FILE.contains(&id) || flags_only.value_source(id) == Some(ValueSource::CommandLine) {
            continue;
        }
        let multiple = matches!(arg.get_action(), ArgAction::Append);
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        // Clap reads an argument's own `env` itself, after the command line.
        if let Some(own) = arg.get_env() {
            if env.contains_key(&*own.to_string_lossy()) {
                sources.insert(id.to_string(), "env");
                continue;
            }
        }
        let var = format!("HUBBUB_{}", long.replace('-', "_").to_uppercase());
        let values = if let Some(value) = env.get(&var) {
            sources.insert(id.to_string(), "env");
            split_env(value, multiple, switch)
        } else if let Some(value) = file.get(long).or_else(|| file.get(&long.replace('-', "_"))) {
            sources.insert(id.to_string(), "file");
            file_values(value, switch).map_err(|reason| LayerError::Field {
                path: path_text(config_path.as_deref()),
                field: long.to_string(),
                reason,
            })?
        } else {
            continue;
        };
        for value in values {
            if switch {
                if value == "true" {
                    injected.push(format!("--{long}").into());
                }
            } else {
                injected.push(format!("--{long}={value}").into());
            }
        }
    }
    if let Some(unknown) = file.keys().find(|k| !known.contains(&k.replace('_', "-"))) {
        return Err(LayerError::Field {
            path: path_text(config_path.as_deref()),
            field: unknown.clone(),
            reason: "unknown setting (see hubbub --help)".into(),
        });
    }
    let mut merged = vec![argv.first().cloned().unwrap_or_else(|| "hubbub".into())];
    merged.extend(injected);
    merged.extend(argv.into_iter().skip(1));
    let matches = command.try_get_matches_from(merged)?;
    let args = Args::from_arg_matches(&matches)?;
    Ok(Layered { args, matches, sources })
}

fn read_file(path: &Path) -> Result<toml::Table, LayerError> {
    let err = |reason: String| LayerError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|e| err(e.to_string().trim().to_string()))
}

fn path_text(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

fn split_env(value: &str, multiple: bool, switch: bool) -> Vec<String> {
    if switch {
        let on = matches!(value.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on");
        return vec![on.to_string()];
    }
    if multiple {
        return value
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
    }
    vec![value.to_string()]
}

fn file_values(value: &toml::Value, switch: bool) -> Result<Vec<String>, String> {
    use toml::Value;
    match value {
        Value::Boolean(b) if switch => Ok(vec![b.to_string()]),
        _ if switch => Err("expected true or false".into()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Integer(i) => Ok(vec![i.to_string()]),
        Value::Float(f) => Ok(vec![f.to_string()]),
        Value::Boolean(b) => Ok(vec![b.to_string()]),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Integer(i) => Ok(i.to_string()),
                _ => Err("lists hold strings or integers".to_string()),
            })
            .collect(),
        _ => Err("expected a string, number, boolean or list".into()),
    }
}

/// The effective settings as TOML, each with where it came from: what
/// `hubbub --check-config` prints (it can be saved as a config file).
pub fn render(layered: &Layered) -> String {
    let mut out = String::from("# hubbub effective configuration (flags > HUBBUB_* env > --config file > defaults)\n");
    for arg in Args::command().get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&id) || id == "version" {
            continue;
        }
        let key = long.replace('-', "_");
        let source = match layered.matches.value_source(id) {
            Some(ValueSource::CommandLine) => *layered.sources.get(id).unwrap_or(&"flag"),
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue) => "default",
            _ => {
                out.push_str(&format!("# {key} = (unset: {})\n", unset_meaning(arg)));
                continue;
            }
        };
        let raw: Vec<String> = layered
            .matches
            .get_raw(id)
            .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let value = if matches!(arg.get_action(), ArgAction::Append) {
            format!(
                "[{}]",
                raw.iter().map(|v| toml_scalar(v)).collect::<Vec<_>>().join(", ")
            )
        } else if matches!(arg.get_action(), ArgAction::SetTrue) {
            raw.first().cloned().unwrap_or_else(|| "false".into())
        } else {
            raw.first().map(|v| toml_scalar(v)).unwrap_or_default()
        };
        let secret = key.contains("secret") || key.contains("key");
        let value = if secret {
            "\"(set, not shown)\"".to_string()
        } else {
            value
        };
        out.push_str(&format!("{key} = {value}  # {source}\n"));
    }
    out
}

fn unset_meaning(arg: &clap::Arg) -> String {
    arg.get_help()
        .map(|h| h.to_string())
        .and_then(|h| {
            h.split("[default: ")
                .nth(1)
                .map(|d| d.trim_end_matches(['.', ']']).to_string())
        })
        .unwrap_or_else(|| "not set".into())
}

fn toml_scalar(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v == "true" || v == "false" {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Layered, LayerError> {
        let argv = std::iter::once("hubbub")
            .chain(args.iter().copied())
            .map(Into::into)
            .collect();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse(argv, &env)
    }

    fn file(text: &str) -> tempfile_path::Temp {
        tempfile_path::Temp::new(text)
    }

    mod tempfile_path {
        pub struct Temp(pub std::path::PathBuf);
        impl Temp {
            pub fn new(text: &str) -> Temp {
                static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!("hubbub-layers-{}-{n}.toml", std::process::id()));
                std::fs::write(&path, text).unwrap();
                Temp(path)
            }
            pub fn arg(&self) -> String {
                self.0.display().to_string()
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let f = file("backlog = 100\nbuffer_pool = 7\nping-interval-secs = 20\n");
        let path = f.arg();
        let l = run(
            &["--config", &path, "--backlog", "300"],
            &[("HUBBUB_BUFFER_POOL", "9"), ("HUBBUB_BACKLOG", "200")],
        )
        .unwrap();
        assert_eq!(l.args.backlog, 300); // flag
        assert_eq!(l.args.buffer_pool, 9); // env over file
        assert_eq!(l.args.ping_interval_secs, 20); // file over default
        assert_eq!(l.args.idle_timeout_secs, crate::config::DEFAULT_IDLE_TIMEOUT_SECS);
    }

    #[test]
    fn lists_come_whole_from_one_layer() {
        let f = file("subprotocol = [\"a\", \"b\"]\n");
        let path = f.arg();
        assert_eq!(run(&["--config", &path], &[]).unwrap().args.subprotocols, ["a", "b"]);
        let l = run(&["--config", &path], &[("HUBBUB_SUBPROTOCOL", "c, d")]).unwrap();
        assert_eq!(l.args.subprotocols, ["c", "d"]);
        let l = run(&["--config", &path, "--subprotocol", "e"], &[]).unwrap();
        assert_eq!(l.args.subprotocols, ["e"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_field() {
        let f = file("backlogg = 1\n");
        let path = f.arg();
        let err = run(&["--config", &path], &[]).err().unwrap().to_string();
        assert!(err.contains("`backlogg`") && err.contains("unknown"), "{err}");
        let f = file("backlog = \"many\"\n");
        let path = f.arg();
        let err = run(&["--config", &path], &[]).err().unwrap().to_string();
        assert!(err.contains("--backlog") && err.contains("many"), "{err}");
        let err = run(&["--config", "/nonexistent/hubbub.toml"], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/hubbub.toml"), "{err}");
    }

    #[test]
    fn render_says_where_each_value_came_from() {
        let f = file("backlog = 100\n");
        let path = f.arg();
        let l = run(
            &["--config", &path, "--buffer-pool", "5"],
            &[("HUBBUB_DRAIN_SECS", "12")],
        )
        .unwrap();
        let text = render(&l);
        assert!(text.contains("backlog = 100  # file"), "{text}");
        assert!(text.contains("buffer_pool = 5  # flag"), "{text}");
        assert!(text.contains("drain_secs = 12  # env"), "{text}");
        assert!(text.contains("max_message_size = 1048576  # default"), "{text}");
    }
}
