"""Plain nn.Modules: generators, discriminators and their blocks. No training logic, no Hydra."""
