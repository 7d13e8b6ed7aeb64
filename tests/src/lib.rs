//! Behaviour suite helpers.
