"""One module per `nsbi` command group; each exposes `add_arguments(parser)` and `run(args)`."""
