//! `cbctl completion bash|zsh|fish`.

use clap_complete::Shell;

use crate::error::Error;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Install, e.g.:
  bash: cbctl completion bash > ~/.local/share/bash-completion/completions/cbctl
  zsh:  cbctl completion zsh > \"${fpath[1]}/_cbctl\"
  fish: cbctl completion fish > ~/.config/fish/completions/cbctl.fish

Exit codes:
  0  success
  2  usage (bad flags or arguments)")]
pub struct Args {
    /// The shell.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

pub fn run(args: &Args) -> Result<(), Error> {
    let shell = match args.shell.as_str() {
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        other => return Err(Error::Usage(format!("unsupported shell {other:?}"))),
    };
    let mut cmd = crate::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cbctl", &mut out);
    let text = String::from_utf8_lossy(&out);
    crate::output::println(text.trim_end())
}
