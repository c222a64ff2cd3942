import { useNavigate } from "../hooks/useRoute";
import type { Route } from "../lib/route";

interface RouteLinkProps extends Omit<React.AnchorHTMLAttributes<HTMLAnchorElement>, "href"> {
  to: Route;
}

/** A link to another view: a real relative href, followed in-page on a plain left click. */
export function RouteLink({ to, onClick, ...rest }: RouteLinkProps) {
  const navigate = useNavigate();
  return (
    <a
      {...rest}
      href={to}
      onClick={(e) => {
        onClick?.(e);
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(to);
      }}
    />
  );
}
