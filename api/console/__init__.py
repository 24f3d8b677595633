"""The web console: server-rendered pages for agents, admins and customers, served by the API process."""
