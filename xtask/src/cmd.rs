//! Running external commands: each is echoed before it runs, and a failure names the command.

use std::process::{Command, Output, Stdio};

use anyhow::{ensure, Context as _};

/// Renders `cmd` as a shell line: environment overrides, program, arguments.
pub(crate) fn display(cmd: &Command) -> String {
    let env = cmd.get_envs().filter_map(|(key, value)| {
        Some(format!(
            "{}={}",
            key.to_string_lossy(),
            quote(&value?.to_string_lossy())
        ))
    });
    let program = std::iter::once(quote(&cmd.get_program().to_string_lossy()));
    let args = cmd.get_args().map(|arg| quote(&arg.to_string_lossy()));
    env.chain(program).chain(args).collect::<Vec<_>>().join(" ")
}

/// Quotes `word` for a shell when it holds anything but plainly safe characters.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:+,@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Echoes and runs `cmd` with the terminal's stdout and stderr; fails unless it exits with 0.
///
/// Stdin is closed so that a command behaves the same locally as in CI, which has none.
pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = display(cmd);
    println!("+ {line}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting `{line}`"))?;
    ensure!(status.success(), "`{line}` failed ({status})");
    Ok(())
}

/// Echoes and runs `cmd`, capturing its output; the caller judges the exit status.
pub(crate) fn output(cmd: &mut Command) -> std::io::Result<Output> {
    println!("+ {}", display(cmd));
    cmd.stdin(Stdio::null()).output()
}
