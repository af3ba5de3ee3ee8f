//! Generated wire types (see build.rs).
