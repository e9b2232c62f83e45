"""State-funded travel support for follow-up visits: each state's policy (what it funds, its
limits and rates, with history), patients' and caregivers' requests, and the arrangements
coordinators book for them."""
