"""The guide's steps, one module each, each a pyinfra @deploy; deploy.py calls them in order."""
