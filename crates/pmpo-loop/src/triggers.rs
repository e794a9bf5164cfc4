//! Workflow triggers: command and webhook actions (to be written).
