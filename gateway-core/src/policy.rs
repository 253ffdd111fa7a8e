//! Access policy: who may talk to the agent, per platform instance.
