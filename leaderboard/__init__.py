"""The static leaderboard site's source (templates, JS, CSS); installed as `cab.leaderboard_site`."""
