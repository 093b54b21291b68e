"""The Portage side: profiles, plans, build jobs, install scripts, cq-emerge."""
