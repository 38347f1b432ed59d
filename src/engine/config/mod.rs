//! Configuration: the settings table, the values a keyword can carry, the parser, and
//! the resolved `Config`.

pub mod model;
pub mod parse;
pub mod settings;
pub mod value;

pub use model::*;
