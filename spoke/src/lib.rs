//! spoke
