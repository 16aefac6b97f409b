"""The paper profile's rehearsal: local stand-ins for what the paper reads from the hub and from paid APIs."""
