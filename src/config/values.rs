//! Parsers for flag values that are more than a number: byte sizes written
//! the way the docs write them, and log filters checked before they silently
//! filter everything out. Used as clap value parsers, so a value from the
//! command line, a `HUBBUB_*` variable or the config file is checked alike.

use tracing::level_filters::LevelFilter;

/// A byte size: a whole number, optionally followed by `B`, `KiB`, `MiB`,
/// `GiB` or `TiB` (powers of 1024; case and a space before the unit do not
/// matter): `1048576`, `512B`, `64KiB`, `1MiB`, `1 GiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "{text:?} is not a size: expected a whole number with an optional unit, like 64KiB"
        ));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" => 10,
        "mib" => 20,
        "gib" => 30,
        "tib" => 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB, GiB or TiB (powers of 1024)"
            ))
        }
    };
    let number: usize = digits.parse().map_err(|_| format!("{digits:?} is too large"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A `--log-level`: a level (`off`, `error`, `warn`, `info`, `debug`,
/// `trace`) or comma-separated directives `TARGET=LEVEL` with at most one
/// bare level (`hubbub=debug,info`). A bare word that is not a level
/// (`verbose`, `warning`) is refused: tracing would read it as a target
/// name and log nothing at all.
pub(crate) fn parse_log_filter(text: &str) -> Result<String, String> {
    let directives: Vec<&str> = text.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err("empty: give a level such as info".into());
    }
    for directive in directives {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, directive),
        };
        if target.is_some_and(str::is_empty) || level.parse::<LevelFilter>().is_err() {
            return Err(format!(
                "{directive:?} is not a level (off, error, warn, info, debug, trace) or TARGET=LEVEL"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in [
            "",
            "MiB",
            "1MB",
            "1.5MiB",
            "-1",
            "1 MiB x",
            "99999999999999999999",
            "16777216TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("1MB").unwrap_err().contains("KiB"));
    }

    #[test]
    fn log_filters_must_name_levels() {
        for good in [
            "info",
            "WARN",
            "off",
            "hubbub=debug,info",
            "hubbub::shard=trace",
            "hubbub=debug",
        ] {
            assert_eq!(parse_log_filter(good).as_deref(), Ok(good));
        }
        for bad in [
            "verbose",
            "warning",
            "",
            " , ",
            "hubbub",
            "hubbub=loud",
            "=info",
            "info,verbose",
        ] {
            assert!(parse_log_filter(bad).is_err(), "{bad:?} accepted");
        }
    }
}
