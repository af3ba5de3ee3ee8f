//! Kubernetes API test server (being built: see issue 4).
