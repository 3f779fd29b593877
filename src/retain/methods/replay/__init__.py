"""Experience replay and MSSR: config, buffer, memory model, schedules and the plugin that joins
them. Import the modules directly (`retain.methods.replay.plugin`); this package imports nothing,
so that `retain.config` can read `replay.config` without pulling in the plugin."""
