//! Progress bars on stderr for long runs; hidden when stderr is not a terminal or when asked.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting to 1000 (per mille done), or a hidden one.
pub fn bar(show: bool, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {percent:>3}% {elapsed_precise} (eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}
