//! The `cbctl` binary; everything is in the library.

fn main() -> std::process::ExitCode {
    cbctl::main()
}
