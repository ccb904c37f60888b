//! The eframe application: a window around [`MainView`], with the app's icon.

use std::path::PathBuf;

use super::view::{ConfigLoader, MainView};

struct App {
    view: MainView,
    frames: FrameTimes,
}

impl eframe::App for App {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if let Some(cpu) = frame.info().cpu_usage {
            self.frames.record(cpu);
        }
        self.view.ui(ui);
    }

    /// Closing the window stops the broker: connections are closed and files written.
    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.view.shutdown();
        self.frames.log();
    }
}

/// CPU time the window spends per frame (building the UI and painting), kept to tell whether
/// it stays responsive under load; logged when the window closes.
#[derive(Default)]
struct FrameTimes {
    /// The first frame loads fonts and is reported apart.
    first: Option<f32>,
    count: u64,
    over_50ms: u64,
    max: f32,
    total: f64,
}

impl FrameTimes {
    fn record(&mut self, seconds: f32) {
        if self.first.is_none() {
            self.first = Some(seconds);
            return;
        }
        self.count += 1;
        self.total += seconds as f64;
        self.max = self.max.max(seconds);
        if seconds > 0.050 {
            self.over_50ms += 1;
        }
    }

    fn log(&self) {
        if self.count > 0 {
            tracing::info!(
                frames = self.count,
                mean_ms = format!("{:.2}", self.total * 1000.0 / self.count as f64),
                max_ms = format!("{:.2}", self.max * 1000.0),
                over_50ms = self.over_50ms,
                first_ms = format!("{:.2}", self.first.unwrap_or_default() * 1000.0),
                "frame times"
            );
        }
    }
}

/// Opens the window and runs until it is closed.
pub fn run(load_config: ConfigLoader, settings_path: Option<PathBuf>) -> Result<(), String> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("mqtt-lab")
            .with_app_id("mqtt-lab")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 400.0])
            .with_icon(icon(64)),
        ..Default::default()
    };
    eframe::run_native(
        "mqtt-lab",
        options,
        Box::new(move |cc| {
            close_on_stop_signal(cc.egui_ctx.clone());
            Ok(Box::new(App {
                view: MainView::new(load_config, settings_path),
                frames: FrameTimes::default(),
            }))
        }),
    )
    .map_err(|e| format!("cannot open the window: {e}"))
}

/// SIGINT or SIGTERM (a logout, `kill`, Ctrl-C in the terminal) closes the window the normal
/// way, so the broker stops cleanly and files are written, as when the user closes it.
fn close_on_stop_signal(ctx: egui::Context) {
    #[cfg(unix)]
    std::thread::spawn(move || {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stop signal: closing the window");
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            ctx.request_repaint();
        });
    });
    #[cfg(not(unix))]
    let _ = ctx;
}

/// The app icon (the same drawing as `assets/mqtt-lab.svg`): a dot sending out two rings,
/// white on blue, drawn here so the binary needs no image decoder.
pub fn icon(size: u32) -> egui::IconData {
    let mut rgba = Vec::with_capacity((size * size * 4) as usize);
    let c = (size as f32 - 1.0) / 2.0;
    let unit = size as f32 / 64.0;
    for y in 0..size {
        for x in 0..size {
            let d = ((x as f32 - c).powi(2) + (y as f32 - c).powi(2)).sqrt() / unit;
            let (r, g, b, a) = if d > 31.0 {
                (0, 0, 0, 0)
            } else if d < 6.0 || (11.0..15.0).contains(&d) || (20.0..24.0).contains(&d) {
                (255, 255, 255, 255)
            } else {
                (0x1e, 0x6f, 0xd9, 255)
            };
            rgba.extend_from_slice(&[r, g, b, a]);
        }
    }
    egui::IconData {
        rgba,
        width: size,
        height: size,
    }
}
