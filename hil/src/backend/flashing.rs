//! Flashing progress: a bar per region written, on stderr.

use std::time::Duration;

use espflash::target::ProgressCallbacks;
use indicatif::{ProgressBar, ProgressStyle};

/// Shows espflash's progress: one bar per segment, named by its address. Without a
/// terminal (CI logs) the bars are hidden and each segment prints one line when done.
#[derive(Debug, Default)]
pub struct ProgressBars {
    bar: Option<ProgressBar>,
    addr: u32,
}

impl ProgressCallbacks for ProgressBars {
    fn init(&mut self, addr: u32, total: usize) {
        let bar = ProgressBar::new(total as u64).with_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {bytes}/{total_bytes} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("{addr:#08x}"));
        self.addr = addr;
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bar = Some(bar);
    }

    fn update(&mut self, current: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(current as u64);
        }
    }

    fn verifying(&mut self) {
        if let Some(bar) = &self.bar {
            bar.set_message("verifying");
        }
    }

    fn finish(&mut self, skipped: bool) {
        if let Some(bar) = self.bar.take() {
            if bar.is_hidden() {
                let done = if skipped { "unchanged" } else { "written" };
                eprintln!(
                    "  {:#08x}: {} bytes {done} in {:.1} s",
                    self.addr,
                    bar.length().unwrap_or_default(),
                    bar.elapsed().as_secs_f64()
                );
            }
            if skipped {
                bar.finish_with_message("unchanged");
            } else {
                bar.finish();
            }
        }
    }
}
