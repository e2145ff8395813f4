"""The HTTP gateway: submit jobs, read their status (see ``gateway.app.create_app``)."""
