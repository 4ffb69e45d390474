#!/bin/sh
# Prints the month before the one containing DATE (default: today) as YYYY-MM.
# `date -d 'last month'` subtracts a month from the whole date, so on the 29th-31st
# it can land in the same month (March 31st - 1 month = "February 31st" = March 3rd);
# stepping back from the 1st of the month cannot overflow.
set -eu
today=$(date -d "${1:-today}" +%Y-%m-01)
date -d "$today -1 month" +%Y-%m
