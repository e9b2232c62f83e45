"""Education modules: versioned Markdown content in English and Spanish
(`education/modules/<key>/{en,es}.md`), loaded, rendered and sanitized by
`content`, validated by `check` (`cgt-access content check`)."""
