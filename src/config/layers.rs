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

/// `HUBBUB_*` variables that belong to the tools around the server (the
/// `tuning/` scripts, the load tester's tests), not to a misspelled flag.
const OTHER_TOOLS_ENV: [&str; 5] = [
    "HUBBUB_TUNING_STATE",
    "HUBBUB_SYSCTL_ROOT",
    "HUBBUB_LIMITS_DIR",
    "HUBBUB_BIN",
    "HUBBUB_LOAD_REQUIRE_HUBBUB",
];

/// Why the layers could not be put together.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The file could not be read: fix the path given to --config.
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    /// A key or value in the file is wrong: the message names it.
    #[error("in {path}, key {field}: {reason}")]
    Field {
        path: String,
        field: String,
        reason: String,
    },
    /// A value from the file or a `HUBBUB_*` variable was refused; `origin`
    /// says where it came from ("in FILE, key K" or "in HUBBUB_X").
    #[error("{origin}: {message}")]
    Source { origin: String, message: String },
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
    /// Flag (long name) -> "in FILE, key K" or "in HUBBUB_X", for values
    /// that came from the file or the environment.
    pub origins: BTreeMap<String, String>,
    /// `HUBBUB_*` variables set that no flag reads (misspelled?).
    pub unknown_env: Vec<String>,
}

/// A validation error with where the refused value came from (`origins` of
/// a [`Layered`]), when it came from the file or the environment.
/// Other flags the reason names get their origins in parentheses.
pub fn explain(origins: &BTreeMap<String, String>, error: &crate::config::ConfigError) -> String {
    let mut text = match origins.get(error.field) {
        Some(origin) => format!("{origin}: {error}"),
        None => error.to_string(),
    };
    let others: Vec<String> = error
        .reason
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|word| word.strip_prefix("--"))
        .filter(|flag| *flag != error.field)
        .filter_map(|flag| origins.get(flag).map(|origin| format!("--{flag} {origin}")))
        .collect();
    if !others.is_empty() {
        text += &format!(" ({})", others.join("; "));
    }
    text
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
    let path = path_text(config_path.as_deref());
    let mut injected: Vec<OsString> = Vec::new();
    let mut sources = BTreeMap::new();
    let mut origins = BTreeMap::new();
    let mut known = Vec::new();
    let mut known_env: Vec<String> = vec!["HUBBUB_CONFIG".into()];
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        known.push(long.to_string());
        let var = format!("HUBBUB_{}", long.replace('-', "_").to_uppercase());
        if NOT_IN_FILE.contains(&id) {
            continue;
        }
        known_env.push(var.clone());
        let own_env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        known_env.extend(own_env.clone());
        let key = file_key(&file, long).map_err(|reason| LayerError::Field {
            path: path.clone(),
            field: long.to_string(),
            reason,
        })?;
        if flags_only.value_source(id) == Some(ValueSource::CommandLine) {
            continue;
        }
        let multiple = matches!(arg.get_action(), ArgAction::Append);
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        // Clap reads an argument's own `env` itself, after the command line.
        if let Some(own) = own_env.filter(|own| env.contains_key(own)) {
            sources.insert(id.to_string(), "env");
            origins.insert(long.to_string(), format!("in {own}"));
            continue;
        }
        let values = if let Some(value) = env.get(&var) {
            sources.insert(id.to_string(), "env");
            origins.insert(long.to_string(), format!("in {var}"));
            split_env(value, multiple, switch).map_err(|message| LayerError::Source {
                origin: format!("in {var}"),
                message,
            })?
        } else if let Some((key, value)) = key.map(|k| (k, &file[k])) {
            sources.insert(id.to_string(), "file");
            origins.insert(long.to_string(), format!("in {path}, key {key}"));
            file_values(value, switch).map_err(|reason| LayerError::Field {
                path: path.clone(),
                field: key.to_string(),
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
            path,
            field: unknown.clone(),
            reason: "unknown setting (see hubbub --help)".into(),
        });
    }
    let unknown_env = env
        .keys()
        .filter(|k| k.starts_with("HUBBUB_") && !known_env.contains(k) && !OTHER_TOOLS_ENV.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut merged = vec![argv.first().cloned().unwrap_or_else(|| "hubbub".into())];
    merged.extend(injected);
    merged.extend(argv.into_iter().skip(1));
    let matches = command
        .try_get_matches_from(merged)
        .map_err(|e| with_origin(e, &origins))?;
    let args = Args::from_arg_matches(&matches)?;
    Ok(Layered {
        args,
        matches,
        sources,
        origins,
        unknown_env,
    })
}

/// The file's key for flag `long`, spelled with `-` or `_`; both spellings
/// at once are refused rather than one silently winning.
fn file_key<'f>(file: &'f toml::Table, long: &str) -> Result<Option<&'f str>, String> {
    let underscored = long.replace('-', "_");
    let dashed = file.get_key_value(long).map(|(k, _)| k.as_str());
    let under = file.get_key_value(&underscored).map(|(k, _)| k.as_str());
    match (dashed, under) {
        (Some(a), Some(b)) if a != b => Err(format!("set twice, as `{a}` and as `{b}`: keep one")),
        (found, other) => Ok(found.or(other)),
    }
}

/// A clap error about a value that came from the file or the environment,
/// with where it came from.
fn with_origin(error: clap::Error, origins: &BTreeMap<String, String>) -> LayerError {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return LayerError::Clap(error);
    };
    let long = arg.trim_start_matches('-').split([' ', '=']).next().unwrap_or("");
    let Some(origin) = origins.get(long) else {
        return LayerError::Clap(error);
    };
    let text = error.to_string();
    let message = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string();
    LayerError::Source {
        origin: origin.clone(),
        message,
    }
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

fn split_env(value: &str, multiple: bool, switch: bool) -> Result<Vec<String>, String> {
    if switch {
        return match value.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(vec!["true".into()]),
            "0" | "false" | "no" | "off" | "" => Ok(vec!["false".into()]),
            _ => Err(format!("{value:?} is not true or false")),
        };
    }
    if multiple {
        return Ok(value
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect());
    }
    Ok(vec![value.to_string()])
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
        pub(crate) struct Temp(pub std::path::PathBuf);
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
        assert!(err.contains("key backlogg") && err.contains("unknown"), "{err}");
        let f = file("backlog = \"many\"\n");
        let path = f.arg();
        let err = run(&["--config", &path], &[]).err().unwrap().to_string();
        assert!(err.contains("--backlog") && err.contains("many"), "{err}");
        assert!(err.starts_with(&format!("in {path}, key backlog: ")), "{err}");
        let err = run(&["--config", "/nonexistent/hubbub.toml"], &[])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/hubbub.toml"), "{err}");
    }

    #[test]
    fn refused_values_say_where_they_came_from() {
        let f = file("max_backlog_bytes = \"lots\"\n");
        let path = f.arg();
        let err = run(&["--config", &path], &[]).err().unwrap().to_string();
        assert!(err.starts_with(&format!("in {path}, key max_backlog_bytes: ")), "{err}");
        assert!(err.contains("lots"), "{err}");
        let err = run(&["--config", &path], &[("HUBBUB_MAX_BACKLOG_BYTES", "heaps")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("in HUBBUB_MAX_BACKLOG_BYTES: ") && err.contains("heaps"),
            "{err}"
        );
        let err = run(
            &["--check-config"],
            &[("HUBBUB_CHECK_CONFIG", "1"), ("HUBBUB_LOG_LEVEL", "verbose")],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("in HUBBUB_LOG_LEVEL: ") && err.contains("verbose"),
            "{err}"
        );
        // The command line is the user's own: clap's message, no origin.
        let Err(LayerError::Clap(_)) = run(&["--backlog", "x"], &[]) else {
            panic!("a bad flag is clap's to report")
        };
    }

    #[test]
    fn a_key_spelled_both_ways_is_refused() {
        let f = file("max_backlog_bytes = 1\nmax-backlog-bytes = 2\n");
        let path = f.arg();
        let err = run(&["--config", &path], &[]).err().unwrap().to_string();
        assert!(
            err.contains("max_backlog_bytes") && err.contains("max-backlog-bytes"),
            "{err}"
        );
        assert!(err.contains("keep one"), "{err}");
    }

    #[test]
    fn unknown_hubbub_variables_are_reported() {
        let env = [
            ("HUBBUB_MAX_BACKLOG_BYTE", "1"),
            ("HUBBUB_BACKLOG", "5"),
            ("HUBBUB_JWT_SECRET", "s"),
            ("HUBBUB_TUNING_STATE", "/tmp"),
            ("OTHER", "x"),
        ];
        let l = run(&[], &env).unwrap();
        assert_eq!(l.unknown_env, ["HUBBUB_MAX_BACKLOG_BYTE"]);
        assert_eq!(l.origins["backlog"], "in HUBBUB_BACKLOG");
        assert_eq!(l.origins["jwt-secret"], "in HUBBUB_JWT_SECRET");
    }

    #[test]
    fn sizes_take_units_in_every_layer() {
        let f = file("max_backlog_bytes = \"64KiB\"\nmax_message_size = 512\n");
        let path = f.arg();
        let l = run(&["--config", &path], &[]).unwrap();
        assert_eq!((l.args.max_backlog_bytes, l.args.max_message_size), (64 << 10, 512));
        let l = run(&["--config", &path], &[("HUBBUB_MAX_MESSAGE_SIZE", "2MiB")]).unwrap();
        assert_eq!(l.args.max_message_size, 2 << 20);
        let l = run(&["--max-backlog-bytes", "1GiB"], &[]).unwrap();
        assert_eq!(l.args.max_backlog_bytes, 1 << 30);
        let err = run(&["--config", &path], &[("HUBBUB_MAX_MESSAGE_SIZE", "2MB")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("in HUBBUB_MAX_MESSAGE_SIZE: ") && err.contains("KiB"),
            "{err}"
        );
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
        assert!(text.contains("max_message_size = \"1MiB\"  # default"), "{text}");
    }
}
