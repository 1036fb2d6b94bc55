pub mod doctor;
pub mod plugins;
pub mod score;
