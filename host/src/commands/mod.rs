pub mod demo;
pub mod doctor;
pub mod model;
pub mod plugins;
pub mod score;
pub mod train;
