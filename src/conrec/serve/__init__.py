"""HTTP service: top-K likely dislikes for a user history."""
