"""The control room: the live page, its JSON API, its event feed and access control."""
