use std::any::Any;
use std::error::Error as StdError;
use std::io;

use http::Request;

use crate::error::{Delivery, Error, ErrorKind};

/// Decides from a failed attempt's error how far the request got, which is
/// what decides whether it may go again.
///
/// [`ReplayLayer`](super::ReplayLayer) uses [`SourceChainClassifier`] unless
/// told otherwise. A closure `Fn(&E) -> Option<Delivery>` is a classifier
/// too, for errors of stacks this crate does not know:
///
/// ```
/// use h2pool::Delivery;
/// use h2pool::replay::ReplayLayer;
///
/// #[derive(Debug)]
/// enum MyError { Unavailable, Other }
///
/// let layer = ReplayLayer::new().classifier(|error: &MyError| match error {
///     MyError::Unavailable => Some(Delivery::NeverSent),
///     MyError::Other => None,
/// });
/// # drop(layer);
/// ```
pub trait Classify<E> {
    /// How far the request got: `None` if the error says nothing about
    /// delivery or its cause is the request itself or a local limit, so a
    /// replay could not help.
    fn classify(&self, error: &E) -> Option<Delivery>;

    /// Returns true if the error is a failure to connect. Such a request was
    /// never sent, but the pool's connect backoff already decides when to
    /// try the server again, so it is replayed only with
    /// [`replay_connect_failures`](super::ReplayLayer::replay_connect_failures).
    fn is_connect_failure(&self, error: &E) -> bool {
        let _ = error;
        false
    }

    /// Takes back the untouched request the error carries, if it has one,
    /// so a replay sends the very same request (extensions and one-shot
    /// body included) rather than a copy.
    fn take_request<B: Send + 'static>(&self, error: &mut E) -> Option<Request<B>> {
        let _ = error;
        None
    }

    /// Turns the error of an attempt that needed a replay, which could not
    /// happen because too much of the body was sent, into the error the
    /// caller gets. The default leaves the error as it is.
    fn body_too_large_to_replay(&self, error: E) -> E {
        error
    }
}

impl<E, F> Classify<E> for F
where
    F: Fn(&E) -> Option<Delivery>,
{
    fn classify(&self, error: &E) -> Option<Delivery> {
        self(error)
    }
}

/// The default classifier: walks an error's [`source`](StdError::source)
/// chain for something that tells how far the request got.
///
/// - an h2pool [`Error`]: its own [`delivery`](Error::delivery), except for
///   kinds a replay cannot help (an invalid request, a local pending limit or
///   timeout, a failing request body);
/// - an [`h2::Error`]: a REFUSED_STREAM reset from the server, or a stream
///   ended by the server's GOAWAY (it was above the last stream id), is
///   refused; other h2 errors may have been processed. This is how errors of
///   hyper and hyper-util's `Client` are judged, as they keep h2's error in
///   their chain;
/// - an [`io::Error`] with kind `ConnectionRefused`: never sent.
///
/// Anything else is not replayed.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceChainClassifier;

impl<E> Classify<E> for SourceChainClassifier
where
    E: StdError + 'static,
{
    fn classify(&self, error: &E) -> Option<Delivery> {
        for error in chain(error) {
            if let Some(ours) = error.downcast_ref::<Error>() {
                return classify_ours(ours);
            }
            if let Some(h2_error) = error.downcast_ref::<h2::Error>() {
                return Some(classify_h2(h2_error));
            }
            if is_connection_refused(error) {
                return Some(Delivery::NeverSent);
            }
        }
        None
    }

    fn is_connect_failure(&self, error: &E) -> bool {
        chain(error).any(|error| {
            error.downcast_ref::<Error>().is_some_and(Error::is_connect)
                || is_connection_refused(error)
        })
    }

    fn take_request<B: Send + 'static>(&self, error: &mut E) -> Option<Request<B>> {
        let error: &mut dyn Any = error;
        error.downcast_mut::<Error>()?.take_request::<Request<B>>()
    }

    fn body_too_large_to_replay(&self, mut error: E) -> E {
        // Only an h2pool error can say it; others are returned as they are.
        let any: &mut dyn Any = &mut error;
        if let Some(ours) = any.downcast_mut::<Error>() {
            let placeholder = Error::new(ErrorKind::BodyTooLargeToReplay, ours.delivery());
            let cause = std::mem::replace(ours, placeholder);
            *ours = Error::new(ErrorKind::BodyTooLargeToReplay, cause.delivery())
                .with_detail(format!("the attempt failed with: {cause}"))
                .with_source(cause);
        }
        error
    }
}

/// The error and its sources, outermost first.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&error| error.source())
}

fn is_connection_refused(error: &(dyn StdError + 'static)) -> bool {
    error
        .downcast_ref::<io::Error>()
        .is_some_and(|error| error.kind() == io::ErrorKind::ConnectionRefused)
}

fn classify_ours(error: &Error) -> Option<Delivery> {
    match error.kind() {
        ErrorKind::InvalidUri
        | ErrorKind::UnsupportedScheme
        | ErrorKind::InvalidRequest
        | ErrorKind::PendingLimit
        | ErrorKind::PendingTimeout
        | ErrorKind::RequestBody
        | ErrorKind::ResponseBody
        | ErrorKind::NotReady
        | ErrorKind::BodyTooLargeToReplay => None,
        _ => Some(error.delivery()),
    }
}

fn classify_h2(error: &h2::Error) -> Delivery {
    let refused = error.is_remote()
        && ((error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM))
            || error.is_go_away());
    if refused {
        Delivery::Refused
    } else {
        Delivery::MaybeProcessed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_refused_connect_deep_in_the_chain_was_never_sent() {
        let error = Wrapper(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(
            SourceChainClassifier.classify(&error),
            Some(Delivery::NeverSent)
        );
        let error = Wrapper(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(SourceChainClassifier.classify(&error), None);
    }

    #[test]
    fn h2_refusals_are_refused_and_other_resets_maybe_processed() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        // A reset we make ourselves is not the server's refusal.
        assert_eq!(
            SourceChainClassifier.classify(&refused),
            Some(Delivery::MaybeProcessed)
        );
    }

    #[test]
    fn local_limits_are_not_replayed() {
        let error = Error::new(ErrorKind::PendingTimeout, Delivery::NeverSent);
        assert_eq!(SourceChainClassifier.classify(&error), None);
        let error = Error::new(ErrorKind::GoAway, Delivery::Refused);
        assert_eq!(
            SourceChainClassifier.classify(&error),
            Some(Delivery::Refused)
        );
    }

    #[test]
    fn the_too_large_error_keeps_the_cause_and_its_delivery() {
        let cause = Error::new(ErrorKind::Refused, Delivery::Refused);
        let error = SourceChainClassifier.body_too_large_to_replay(cause);
        assert_eq!(error.kind(), ErrorKind::BodyTooLargeToReplay);
        assert_eq!(error.delivery(), Delivery::Refused);
        assert!(error.to_string().contains("REFUSED_STREAM"), "{error}");
    }
}
