//! The `iotbox` executable: everything is in the library (see its crate
//! documentation for the layout); this picks the applet from `argv` and
//! turns its error into one line on stderr and the exit code.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match iotbox::applets::dispatch(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}");
            ExitCode::from(e.exit_code())
        }
    }
}
