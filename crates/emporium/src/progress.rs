//! Progress of long jobs: a redrawn bar on a terminal, a plain line every 10% otherwise (logs,
//! CI), so both humans and log readers can follow a 1M-product seed.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: &'static str,
    total: u64,
    started: Instant,
    last_draw: Instant,
    last_decile: u64,
    terminal: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: u64) -> Self {
        let now = Instant::now();
        Self {
            label,
            total: total.max(1),
            started: now,
            last_draw: now - Duration::from_secs(1),
            last_decile: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn update(&mut self, done: u64) {
        if self.terminal {
            if self.last_draw.elapsed() >= Duration::from_millis(100) || done >= self.total {
                self.last_draw = Instant::now();
                let filled = (done.min(self.total) * 30 / self.total) as usize;
                eprint!(
                    "\r{}: [{}{}] {done}/{} {}/s   ",
                    self.label,
                    "#".repeat(filled),
                    " ".repeat(30 - filled),
                    self.total,
                    self.rate(done)
                );
                let _ = std::io::stderr().flush();
            }
        } else {
            let decile = done * 10 / self.total;
            if decile > self.last_decile {
                self.last_decile = decile;
                eprintln!("{}: {done}/{} ({}%) {}/s", self.label, self.total, decile * 10, self.rate(done));
            }
        }
    }

    pub fn finish(&mut self, done: u64) {
        self.update(done);
        if self.terminal {
            eprintln!();
        }
        eprintln!("{}: {done} in {:.1} s ({}/s)", self.label, self.started.elapsed().as_secs_f64(), self.rate(done));
    }

    fn rate(&self, done: u64) -> u64 {
        (done as f64 / self.started.elapsed().as_secs_f64().max(1e-3)) as u64
    }
}
