"""Where feed lists and extra articles come from: OPML, autodiscovery, Substack's API."""
