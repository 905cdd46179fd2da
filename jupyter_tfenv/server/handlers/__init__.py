"""REST handlers under /tfenv/, one module per resource."""
