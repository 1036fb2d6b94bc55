pub mod demo;
pub mod demo_data;
pub mod doctor;
pub mod eval;
pub mod model;
pub mod plugins;
pub mod score;
pub mod train;
