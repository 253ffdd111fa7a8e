//! The agent bridge: how the gateway reaches the agent.
