"""What the web and worker processes share (logging, Redis start-up checks); it imports only `cache`."""
