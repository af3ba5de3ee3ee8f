//! Bundle discovery and rendering. (Being built: see issue 3.)
