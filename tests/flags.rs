//! `hubbub --help` and README.md's flag table list the same flags with the
//! same defaults, so the two cannot drift apart again. The help is the
//! binary's own; a flag added to the code needs a README row, and a default
//! changed in one place fails here until the other says the same.

use std::collections::BTreeMap;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Flags clap adds itself; the README does not list them.
const CLAP_OWN: [&str; 2] = ["help", "version"];

fn help_text() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The long flag a help line introduces (`  -h, --help`, `      --listen <LISTEN>`).
fn flag_of_line(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 6 {
        return None; // description text is indented further
    }
    let rest = trimmed
        .strip_prefix("--")
        .or_else(|| trimmed.split_once(", --").map(|(_, r)| r))?;
    rest.split([' ', '=']).next().filter(|f| !f.is_empty())
}

/// Every `[default: ...]` in `text` (brackets inside are balanced).
fn defaults_in(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("[default: ") {
        let body = &rest[at + "[default: ".len()..];
        let mut depth = 0;
        let end = body
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' if depth == 0 => return true,
                    ']' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map(|(i, _)| i)
            .unwrap_or(body.len());
        found.push(body[..end].trim().to_string());
        rest = &body[end..];
    }
    found
}

/// flag -> every default its help block shows.
fn help_flags(help: &str) -> BTreeMap<String, Vec<String>> {
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut finish = |entry: Option<(String, String)>| {
        if let Some((flag, block)) = entry {
            flags.insert(flag, defaults_in(&block));
        }
    };
    for line in help.lines() {
        if let Some(flag) = flag_of_line(line) {
            finish(current.take());
            current = Some((flag.to_string(), String::new()));
        } else if let Some((_, block)) = current.as_mut() {
            block.push(' ');
            block.push_str(line.trim());
        }
    }
    finish(current);
    for own in CLAP_OWN {
        flags.remove(own);
    }
    flags
}

/// flag -> default cell (backticks dropped) of README.md's "## Flags" table.
fn readme_flags() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let section = readme
        .split("\n## Flags")
        .nth(1)
        .expect("README has a ## Flags section");
    let section = section.split("\n## ").next().unwrap();
    let mut flags = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `--")) {
        // The flag and default cells hold no `|`; the meaning may.
        let cells: Vec<&str> = row.split('|').skip(1).collect();
        assert!(cells.len() >= 3, "README row without three cells: {row}");
        let flag = cells[0]
            .trim()
            .trim_start_matches("`--")
            .split([' ', '`'])
            .next()
            .unwrap()
            .to_string();
        let default = cells[1].replace('`', "").trim().to_string();
        assert!(
            flags.insert(flag.clone(), default).is_none(),
            "README lists --{flag} twice"
        );
    }
    flags
}

#[test]
fn help_and_readme_list_the_same_flags_with_the_same_defaults() {
    let help = help_flags(&help_text());
    let readme = readme_flags();
    assert!(help.len() >= 25, "help parsed badly: {help:?}");
    let missing: Vec<&String> = help.keys().filter(|f| !readme.contains_key(*f)).collect();
    assert!(missing.is_empty(), "flags in --help without a README row: {missing:?}");
    let extra: Vec<&String> = readme.keys().filter(|f| !help.contains_key(*f)).collect();
    assert!(
        extra.is_empty(),
        "README rows for flags --help does not know: {extra:?}"
    );
    for (flag, defaults) in &help {
        assert!(
            defaults.len() <= 1,
            "--{flag} shows its default more than once: {defaults:?}"
        );
        let documented = &readme[flag];
        match defaults.first() {
            Some(default) => assert_eq!(documented, default, "--{flag}: README's default differs from --help's"),
            None => assert!(
                documented.is_empty() || documented == "none",
                "--{flag}: README gives default {documented:?}, --help none"
            ),
        }
    }
}

#[test]
fn the_parsers_read_what_they_should() {
    let help = "      --a <A>\n          Text [default: x [y]]\n\n  -h, --help\n          Print\n      \
                --b\n          One [default: 1] and [default: 2]\n";
    let flags = help_flags(help);
    assert_eq!(flags["a"], ["x [y]"]);
    assert_eq!(flags["b"], ["1", "2"]);
    assert!(!flags.contains_key("help"));
}
