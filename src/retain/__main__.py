from retain.cli import app

app()
