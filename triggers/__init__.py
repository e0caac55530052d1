"""fnrun triggers: event (topic patterns), schedule (cron) and webhook (HTTP)."""
