"""Running a folder: planning, scheduling inputs through the engine, records, writing and sheets."""
