"""What is done with the renders: marketplace feeds, exports and the contact-sheet report."""
