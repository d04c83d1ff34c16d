//! The frame loop: take in the threads' reports, draw, apply what the operator asked for,
//! then run the measurement and screenshot modes.

use super::app::StationApp;
use super::bench;
use super::panels;
use eframe::egui;

impl eframe::App for StationApp {
    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        self.poll();
        let commands = panels::draw(self, ui);
        for c in commands {
            self.apply(c);
        }
        bench::after_frame(self, ui, frame);
    }
}
