//! The condition language of workflow triggers (to be written).
