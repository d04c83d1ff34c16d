//! Workflow unit tests against an in-process fake device.
