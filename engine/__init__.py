"""The engine: settings, the Faust worker, the CLI, the embedded servers, the simulator."""
