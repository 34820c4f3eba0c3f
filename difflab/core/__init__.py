"""The σ-space core: errors, registries, configs, schedules, preconditioning, posterior, pixels."""
